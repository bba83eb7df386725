"""One hourly consumption series per meter, rebuilt from its readings (pure).

A reading carries hourly profile slots and the meter's index. The series is
keyed by the hour's start (unix seconds, UTC), so overlapping slots from
several readings merge by timestamp and never add up twice. Rules:

- ``measured``: the hour is a complete profile slot of some reading (a slot is
  complete when it ended no later than ``ANCHOR_TOLERANCE_S`` after the reading
  was received, except a polled Modbus meter's newest slot, which is the hour
  still running however close to its end the poll came). Several readings with
  the same hour: the latest received wins.
- An *anchor* is the index at an hour boundary. A reading gives one at the end
  of its newest complete slot when it was received within
  ``ANCHOR_TOLERANCE_S`` of it (a node sends right after it closes an hour), or
  at the start of a running slot (a Modbus reading: the index minus the running
  hour's litres), and one at the start of its oldest slot (that index minus
  the complete slots' litres).
- Between two consecutive anchors, the hours not measured share what the
  index difference leaves after the measured hours: one such hour gets it
  exactly (``index``), several share it equally (``estimated``; the total is
  exact, the split is not).
- An index lower than the previous anchor's (counter reset, meter replaced
  under the same id, rollover) fills nothing: those hours stay missing and an
  ``IndexStep`` is reported. A difference smaller than the measured hours
  inside it fills nothing either. Missing hours are simply absent.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

HOUR_S = 3600
ANCHOR_TOLERANCE_S = 300    # a node sends within seconds of closing an hour; retries take longer

MEASURED = "measured"
INDEX = "index"
ESTIMATED = "estimated"
QUALITIES = (MEASURED, INDEX, ESTIMATED)


def parse_utc(text: str) -> float:
    """Unix seconds of an ISO 8601 UTC time with ``Z`` (the contract's only form)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def format_hour(hour: int) -> str:
    """``2024-05-01T06:00:00Z`` for unix seconds ``hour``."""
    return datetime.fromtimestamp(hour, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Slot:
    """One profile slot: the hour starting at ``start`` (unix s) and its litres.

    ``running``: the reading says the hour had not ended when it was read (a polled
    Modbus meter's newest slot, docs/mqtt.md), whatever its time says: a poll a few
    minutes before the hour's end must not make that hour measured.
    """

    start: int
    litres: float
    running: bool = False

    def stored(self) -> list[Any]:
        """The slot as the store keeps it in a reading's ``slots`` JSON."""
        return [self.start, self.litres, 1] if self.running else [self.start, self.litres]


def stored_slot(item: Sequence[Any]) -> Slot:
    """A slot from its stored form (``Slot.stored``; rows from before ``running``
    have two items)."""
    return Slot(int(item[0]), float(item[1]), len(item) > 2 and bool(item[2]))


@dataclass(frozen=True)
class MeterReading:
    """What the series needs from one stored reading."""

    id: str
    received_at: float
    index_l: float | None
    slots: tuple[Slot, ...]


@dataclass(frozen=True)
class Hour:
    """One value of the series."""

    start: int
    litres: float
    quality: str


@dataclass(frozen=True)
class IndexStep:
    """The index went backwards between two anchors."""

    at: int            # the later anchor's hour (unix s)
    before_l: float
    after_l: float
    reading_id: str


@dataclass(frozen=True)
class Series:
    """A meter's hourly series and what was found while building it."""

    hours: dict[int, Hour]
    steps: list[IndexStep]
    conflicts: int      # hours where two readings' slots disagreed


def meter_reading(doc: Mapping[str, Any]) -> MeterReading:
    """The series' view of one reading document (already schema-valid)."""
    index = doc.get("readings", {}).get("index", {}).get("value")
    slots = []
    for slot in doc.get("profile", []):
        if "litres" in slot:
            slots.append(Slot(int(parse_utc(slot["start"])), float(slot["litres"])))
    if doc.get("source") == "modbus" and slots:
        # A polled meter's newest slot is the hour still running (docs/mqtt.md).
        newest = max(slots, key=lambda s: s.start)
        slots = [Slot(s.start, s.litres, s is newest) for s in slots]
    return MeterReading(str(doc["id"]), parse_utc(doc["received_at"]),
                        None if index is None else float(index), tuple(slots))


def _anchors(reading: MeterReading) -> tuple[list[Slot], list[tuple[int, float]]]:
    """(complete slots, anchors) of one reading."""
    t = reading.received_at
    complete = [s for s in reading.slots
                if not s.running and s.start + HOUR_S <= t + ANCHOR_TOLERANCE_S]
    running = [s for s in reading.slots
               if s.running or s.start <= t < s.start + HOUR_S - ANCHOR_TOLERANCE_S]
    if reading.index_l is None:
        return complete, []
    end: tuple[int, float] | None = None
    if running:
        end = (running[-1].start, reading.index_l - running[-1].litres)
    elif complete and t - (complete[-1].start + HOUR_S) <= ANCHOR_TOLERANCE_S:
        end = (complete[-1].start + HOUR_S, reading.index_l)
    elif not reading.slots:
        boundary = round(t / HOUR_S) * HOUR_S
        if abs(t - boundary) <= ANCHOR_TOLERANCE_S:
            end = (int(boundary), reading.index_l)
    if end is None:
        return complete, []
    anchors = [end]
    before = [s for s in complete if s.start < end[0]]
    if before and _contiguous(before) and before[-1].start + HOUR_S == end[0]:
        anchors.insert(0, (before[0].start, end[1] - sum(s.litres for s in before)))
    return complete, anchors


def _contiguous(slots: Sequence[Slot]) -> bool:
    return all(b.start - a.start == HOUR_S for a, b in itertools.pairwise(slots))


def rebuild(readings: Iterable[MeterReading]) -> Series:
    """The hourly series of one meter from all its readings, in any order."""
    ordered = sorted(readings, key=lambda r: (r.received_at, r.id))
    hours: dict[int, Hour] = {}
    conflicts = 0
    anchors: dict[int, tuple[float, str]] = {}
    for reading in ordered:
        complete, points = _anchors(reading)
        for slot in complete:
            old = hours.get(slot.start)
            if old is not None and old.litres != slot.litres:
                conflicts += 1
            hours[slot.start] = Hour(slot.start, slot.litres, MEASURED)
        for at, index in points:
            anchors[at] = (index, reading.id)     # latest received wins
    steps = _between_anchors(hours, [(at, index, reading_id)
                                     for at, (index, reading_id) in sorted(anchors.items())])
    return Series(hours, steps, conflicts)


def _between_anchors(hours: dict[int, Hour],
                     anchors: Sequence[tuple[int, float, str]]) -> list[IndexStep]:
    """Fill the missing ``hours`` between consecutive ``anchors`` (hour, index, reading
    id; oldest first) in place; the index steps found where the index went backwards.

    What two anchors leave after the known hours between them goes to the missing
    ones: to a single missing hour as ``index``, spread evenly as ``estimated``
    over several. ``rebuild`` and ``fill`` share it so both give the same series.
    """
    steps: list[IndexStep] = []
    for (a_at, a_index, _), (b_at, b_index, b_id) in itertools.pairwise(anchors):
        if b_index < a_index:
            steps.append(IndexStep(b_at, a_index, b_index, b_id))
            continue
        between = range(a_at, b_at, HOUR_S)
        gap = [h for h in between if h not in hours]
        if not gap:
            continue
        left = b_index - a_index - sum(hours[h].litres for h in between if h in hours)
        if left < 0:
            continue
        quality = INDEX if len(gap) == 1 else ESTIMATED
        for h in gap:
            hours[h] = Hour(h, left / len(gap), quality)
    return steps


# -- the incremental series ---------------------------------------------------
#
# A store keeps, per meter, the winning value of every measured slot and of every
# anchor (the one from the reading received latest, ties broken by id: the
# order ``rebuild`` applies). A new reading can only change the hours between
# the anchor before the earliest hour it touched and the anchor after the
# latest one: ``fill`` recomputes exactly that span, which gives the same
# series as ``rebuild`` over all readings, whatever their arrival order.


@dataclass(frozen=True)
class Contribution:
    """What one reading offers the series: its complete slots and its anchors."""

    reading_id: str
    received_at: float
    slots: dict[int, float]       # hour start -> litres
    anchors: dict[int, float]     # hour boundary -> index (L)


def contribution(reading: MeterReading) -> Contribution:
    """The complete slots and anchors of ``reading`` (the rules in this module's docstring)."""
    complete, points = _anchors(reading)
    return Contribution(reading.id, reading.received_at,
                        {s.start: s.litres for s in complete}, dict(points))


def wins(received_at: float, reading_id: str, other: tuple[float, str] | None) -> bool:
    """True if a value from (``received_at``, ``reading_id``) replaces ``other``'s."""
    return other is None or (received_at, reading_id) > other


def span(touched: Sequence[int], anchor_before: int | None,
         anchor_after: int | None) -> tuple[int, int]:
    """[lo, hi): the hours a change at ``touched`` hours can move.

    ``anchor_before`` is the newest anchor before ``min(touched)``,
    ``anchor_after`` the oldest after ``max(touched)`` (None when there is none).
    """
    lo = min(touched) if anchor_before is None else anchor_before
    hi = max(touched) + HOUR_S if anchor_after is None else anchor_after
    return lo, hi


def fill(lo: int, hi: int, measured: Mapping[int, float],
         anchors: Sequence[tuple[int, float, str]]) -> tuple[dict[int, Hour], list[IndexStep]]:
    """The series' hours in [lo, hi) and the index steps at anchors in (lo, hi].

    ``measured``: the winning slots (hour -> litres) in [lo, hi); ``anchors``:
    the winning anchors (hour, index, reading id) in [lo, hi], oldest first.
    Missing hours are absent from the result.
    """
    hours = {h: Hour(h, litres, MEASURED) for h, litres in measured.items() if lo <= h < hi}
    return hours, _between_anchors(hours, anchors)


class IncrementalSeries:
    """One meter's series kept up to date reading by reading, in memory.

    The same steps a store takes in its tables (``backend.store``); the
    property tests hold it equal to ``rebuild`` for any arrival order.
    """

    def __init__(self) -> None:
        self.slots: dict[int, tuple[float, float, str]] = {}    # hour -> litres, received, id
        self.anchors: dict[int, tuple[float, float, str]] = {}  # hour -> index, received, id
        self.hours: dict[int, Hour] = {}
        self.steps: dict[int, IndexStep] = {}

    def add(self, reading: MeterReading) -> tuple[int, int] | None:
        """Merge one reading; return the [lo, hi) span recomputed, or None."""
        c = contribution(reading)
        touched = []
        for table, values in ((self.slots, c.slots), (self.anchors, c.anchors)):
            for hour, value in values.items():
                old = table.get(hour)
                if wins(c.received_at, c.reading_id, None if old is None else old[1:]):
                    table[hour] = (value, c.received_at, c.reading_id)
                    touched.append(hour)
        if not touched:
            return None
        before = [h for h in self.anchors if h < min(touched)]
        after = [h for h in self.anchors if h > max(touched)]
        lo, hi = span(touched, max(before, default=None), min(after, default=None))
        hours, steps = fill(
            lo, hi, {h: v[0] for h, v in self.slots.items() if lo <= h < hi},
            [(h, v[0], v[2]) for h, v in sorted(self.anchors.items()) if lo <= h <= hi])
        self.hours = {h: v for h, v in self.hours.items() if not lo <= h < hi} | hours
        self.steps = {h: s for h, s in self.steps.items() if not lo < h <= hi}
        self.steps.update({s.at: s for s in steps})
        return lo, hi
