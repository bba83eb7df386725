"""The gateway's pure core: what to do with one received frame.

Nothing here does I/O; every function and class works on bytes and in-memory
state, so the whole decision path is tested without sockets, files or clocks.
Its types (``Reception``, ``Device``, ``Accepted``, ``Counters``) come from
gateway.model, not from the registry, spool or status modules that store or
serve them; tests/gateway/test_pure_core.py keeps it that way.

For each ``Reception`` (frame bytes plus where and how it was heard):

1. ``protocol.frame.parse_header``: version, kind, length (no key needed), answered
   by ``gateway.fastframe`` for well-formed headers.
2. Registry lookup by device id: ``unknown_device`` if it is not registered.
3. Dedup: a copy of a frame already waiting in the dedup window (same device,
   same counter, identical bytes) is merged into it: its receiver metadata is
   added and nothing else is done (the bytes were already verified).
4. Verify and decrypt with the device's key (``Verifier``, gateway.pipeline_checks):
   AES-CCM through cryptography's ``AESCCM`` object, cached per device and tag
   length, nonce ``protocol.frame.nonce(device_id, fcnt)``, the 8 header bytes as
   associated data, then ``protocol.frame.open_payload`` (``gateway.fastframe``'s decoder,
   made per kind from the kinds table, compiled where gateway/_fastframe.c is
   built, answers the payloads the table accepts, and leaves the rest to the
   protocol code, so the reasons are the protocol's). The result is exactly what
   ``protocol.frame.decode`` returns, or the same FrameError reason.
   The frame's kind must be the registered kind (``kind_mismatch``).
5. Replay check (``ReplayGuard``, gateway.pipeline_checks) against the last accepted
   counter:
     - no counter yet, or a higher one: new;
     - the same counter: ``duplicate`` when the bytes are those of the frame
       accepted with that counter (or when they are unknown, after a restart),
       ``replay`` otherwise (the guard keeps each device's last accepted frame
       as its fingerprint; a Modbus reading's is ``values_digest``);
     - a lower one: ``counter_reset`` when the new counter is below
       ``reset_below`` (16) and the last one is not, i.e. the node started
       counting again, typically after losing its state; ``replay`` otherwise.
   A counter reset is never accepted by itself: an operator confirms it with
   ``knute devices reset-counter`` after checking the node. The counter is 24
   bits; a node that reaches 16,777,215 must be given a new key.
6. Dedup window: the frame waits ``dedup_window_s`` (200 ms, as ChirpStack) from
   its first reception so copies heard by other sources (radio bridges,
   concentrators) are merged into one reading listing its receivers. The list
   is bounded (``max_receivers``, default 8): past it a copy replaces the
   weakest receiver kept when it was heard better (SNR, then RSSI), and every
   receiver left out is counted in the reading's ``receivers_dropped``, so a
   flood of copies costs neither memory nor message size. ``due()`` releases
   frames whose window has closed, oldest first, so per-device order is kept.

Readings that arrive already decoded (a Modbus poll: the gateway read the
device itself, so there are no frame bytes and no key) go through
``submit_reading``: the same steps without 1 and 4's decryption. The reading
is checked against the kinds table (``frame_kind``, ``frame_device``,
``frame_fcnt``, ``payload_*``), the registry (``unknown_device``,
``kind_mismatch``: such devices are registered like radio ones, with any key),
the replay check and the dedup window. Its fingerprint, which tells a
``duplicate`` from a ``replay`` at the same counter, is a digest of the
values' canonical JSON (``values_digest``).

The replay state is advanced when a frame enters the dedup window. The daemon
spools released frames (``Spool.accept`` commits rows and counters together)
and, should a commit fail, reloads the counters from the spool with
``load_counters`` so memory never runs ahead of what was accepted.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from knute.gateway import fastframe, message
from knute.gateway.model import Accepted, Counters, Device
from knute.gateway.model import Reception as Reception  # re-exported: sources build these
from knute.gateway.pipeline_checks import (
    COUNTER_RESET,
    DEFAULT_RESET_BELOW,
    DUPLICATE,
    REPLAY,
    ReplayGuard,
    Verifier,
)
from knute.protocol import frame as pframe
from knute.protocol import kinds
from knute.protocol.errors import (
    FRAME_DEVICE,
    FRAME_FCNT,
    FRAME_KIND,
    FRAME_TAG,
    PAYLOAD_SHAPE,
    FrameError,
)

UNKNOWN_DEVICE = "unknown_device"
OVERSIZE = "oversize"
KIND_MISMATCH = "kind_mismatch"

GATEWAY_REASONS = (UNKNOWN_DEVICE, REPLAY, DUPLICATE, COUNTER_RESET, OVERSIZE, KIND_MISMATCH)

MODBUS = "modbus"             # source type of readings polled over Modbus

_NONCE = fastframe.NONCE.pack     # protocol.frame.nonce's layout, as one C call
_FAST_KINDS = fastframe.KINDS
_CONTROL = fastframe.CONTROL
_UNPACK_IDS = fastframe.UNPACK_IDS
_MAX_FRAME = pframe.MAX_FRAME
_FAST_MIN = pframe.HEADER_LEN + 1 + 4    # the shortest frame with a 4-byte tag
# Pipeline.decide's per-device entry: (control byte, cipher, the kind's generated decoder,
# tag length, None or the kind_mismatch detail)
_Entry = tuple[int, AESCCM, fastframe.Decoder, int, str | None]

DEFAULT_DEDUP_WINDOW_S = 0.2
# Receivers kept per reading. A district gateway has a few concentrators and radio
# bridges in earshot of a meter; 8 covers every overlap of the model deployment and
# bounds the list at about 2 KB of JSON (packet-forwarder receivers are the longest).
DEFAULT_MAX_RECEIVERS = 8


@dataclass
class Ready:
    """A verified frame that passed the replay check, collecting its receptions."""

    decoded: dict[str, Any]    # what protocol.frame.decode returns
    device: Device
    raw: bytes
    digest: bytes
    deadline: float
    receptions: list[Reception] = field(default_factory=list)
    receivers_dropped: int = 0          # copies left out of ``receptions`` by the bound
    epoch: int = 0                      # the device's epoch when the frame was accepted
    first_at: float | None = None       # received_at of the first copy
    radio: bool = False                 # some copy was heard over the air
    under_next_key: bool = False        # verified under a pending key rotation's next key

    def __post_init__(self) -> None:
        if self.receptions:
            first = self.receptions[0]
            if self.first_at is None:
                self.first_at = first.received_at
            self.radio = self.radio or any(r.source_type == "radio" for r in self.receptions)

    def merge(self, rx: Reception, max_receivers: int) -> None:
        """Add one more copy's receiver, keeping at most ``max_receivers`` of the best.

        Past the bound the weakest receiver kept (lowest SNR, then RSSI; the
        earliest among equals) gives way to a better one; either way one
        receiver is counted in ``receivers_dropped``. Kept receivers stay in
        arrival order.
        """
        self.radio = self.radio or rx.source_type == "radio"
        if len(self.receptions) < max_receivers:
            self.receptions.append(rx)
            return
        self.receivers_dropped += 1
        if not self.receptions:
            return
        weakest = min(range(len(self.receptions)),
                      key=lambda i: _strength(self.receptions[i].receiver))
        if _strength(rx.receiver) > _strength(self.receptions[weakest].receiver):
            del self.receptions[weakest]
            self.receptions.append(rx)

    @property
    def received_at(self) -> float:
        """When the first copy arrived (unix seconds)."""
        return self.first_at if self.first_at is not None else self.receptions[0].received_at

    @property
    def source_type(self) -> str:
        """"radio" when any receiver heard it over the air, else the first source's type."""
        return "radio" if self.radio else self.receptions[0].source_type

    @property
    def receivers(self) -> list[dict[str, Any]]:
        """The kept receivers' metadata, in arrival order."""
        return [dict(r.receiver) for r in self.receptions]

    @property
    def alarms(self) -> list[str]:
        """Names of the alarm/status bits set in the frame."""
        return alarm_names(self.decoded)

    @property
    def battery(self) -> int | None:
        """Battery in percent, when the kind reports it."""
        return battery_percent(self.decoded)


@dataclass(frozen=True)
class Verdict:
    """What ``Pipeline.submit`` did with a reception."""

    status: str                # "pending" | "merged" | "rejected"
    reason: str | None = None
    device_id: int | None = None
    fcnt: int | None = None
    detail: str | None = None


class Rejection(NamedTuple):
    """What ``Pipeline.decide`` rejected, and why (a ``Verdict`` of status "rejected")."""

    reason: str
    device_id: int | None
    fcnt: int | None
    detail: str | None


def _strength(receiver: Mapping[str, Any]) -> tuple[float, float]:
    """How well a receiver heard the frame: (SNR dB, RSSI dBm), missing ones lowest."""
    snr = receiver.get("snr_db")
    rssi = receiver.get("rssi_dbm")
    return (float(snr) if isinstance(snr, int | float) else float("-inf"),
            float(rssi) if isinstance(rssi, int | float) else float("-inf"))


def alarm_names(decoded: Mapping[str, Any]) -> list[str]:
    """The names of every bit set in the kind's bit-set fields."""
    kind: dict[str, Any] = kinds.KINDS[decoded["kind_id"]]
    names: list[str] = []
    for fld in kind["fields"]:
        if fld["type"] == "bits":
            raw = decoded["values"].get(fld["name"])
            if raw:
                names.extend(kinds.bit_names(fld, raw))
    return names


def battery_percent(decoded: Mapping[str, Any]) -> int | None:
    """The battery reading in percent, or None."""
    kind: dict[str, Any] = kinds.KINDS[decoded["kind_id"]]
    fld = kinds.field_by_name(kind, "battery")
    raw = decoded["values"].get("battery")
    if fld is None or raw is None:
        return None
    value = kinds.scaled(fld, raw)
    return int(value)


def digest(buf: bytes) -> bytes:
    """A short fingerprint of a frame's bytes (to tell duplicates from replays)."""
    return hashlib.blake2b(buf, digest_size=8).digest()


def canonical_values(values: Mapping[str, Any]) -> bytes:
    """A reading's values as canonical JSON (sorted keys, no spaces), UTF-8."""
    return json.dumps(values, sort_keys=True, separators=(",", ":")).encode()


def values_digest(values: Mapping[str, Any]) -> bytes:
    """The fingerprint of an already-decoded reading: ``digest`` of its canonical values."""
    return digest(canonical_values(values))


class Pipeline:
    """Decode, look up, verify, replay-check and deduplicate receptions.

    Only the daemon's ingest thread calls it. ``counters`` gets ``rejected`` by
    reason (global and per source) and ``merged`` for copies folded into a frame
    already in its dedup window.
    """

    def __init__(self, devices: Mapping[int, Device], replay: Mapping[int, int] | None = None,
                 *, counters: Counters | None = None,
                 dedup_window_s: float = DEFAULT_DEDUP_WINDOW_S,
                 reset_below: int = DEFAULT_RESET_BELOW,
                 max_receivers: int = DEFAULT_MAX_RECEIVERS,
                 epochs: Mapping[int, int] | None = None,
                 python_decoders: bool = False) -> None:
        self.devices: Mapping[int, Device] = dict(devices)
        self.counters = counters if counters is not None else Counters()
        self.dedup_window_s = dedup_window_s
        self.max_receivers = max(1, max_receivers)
        self.epochs: dict[int, int] = dict(epochs or {})
        self.verifier = Verifier()
        self.replay = ReplayGuard(replay, reset_below)
        self._window: OrderedDict[tuple[int, int], Ready] = OrderedDict()
        # device id -> the next key of a pending key rotation (docs/protocol.md 12.9):
        # a frame that fails under the current key is tried under it.
        self.next_keys: dict[int, bytes] = {}
        # The dicts decide() reads on every frame (each is changed only in place)
        self._fast: dict[int, _Entry] = {}
        # The compiled payload walk where it is built (fastframe.FAST_PATH); the
        # generated Python decoders when asked (the benchmark compares the two, the
        # tests pin both to the general route): the same answers either way.
        self._python_decoders = python_decoders
        self._last = self.replay._last
        self._digests = self.replay._digest

    # -- state changes from outside ----------------------------------------------------

    def update_devices(self, devices: Mapping[int, Device]) -> None:
        """Use a new registry snapshot (SIGHUP); cached ciphers of changed keys go."""
        self.devices = dict(devices)
        self.verifier.forget(self.devices)
        self._fast.clear()

    def load_counters(self, counters: Mapping[int, int]) -> None:
        """Reset the replay state to the spool's committed counters."""
        self.replay.load(counters)

    def learn_counters(self, heard: Mapping[int, tuple[int, int]]) -> dict[int, int]:
        """Counters other gateways accepted, ``device_id -> (fcnt, epoch)``: each one of a
        known device in the device's current epoch and above its own counter raises it.
        Returns the counters that rose (for the spool)."""
        raised: dict[int, int] = {}
        for device_id, (fcnt, epoch) in heard.items():
            if device_id not in self.devices or epoch != self.epochs.get(device_id, 0):
                continue
            if self.replay.learn(device_id, fcnt):
                raised[device_id] = fcnt
        return raised

    def forget_counter(self, device_id: int, epoch: int | None = None) -> None:
        """Forget one device's counter (after ``knute devices reset-counter``); ``epoch``
        is the device's new epoch (``Spool.reset_counter`` returns it)."""
        self.replay.forget(device_id)
        if epoch is not None:
            self.epochs[device_id] = epoch

    # -- the decision --------------------------------------------------------------------

    def _reject(self, rx: Reception, reason: str, device_id: int | None = None,
                fcnt: int | None = None, detail: str | None = None) -> Verdict:
        self.counters.reject(reason, rx.source)
        return Verdict("rejected", reason, device_id, fcnt, detail)

    def decide(self, buf: bytes) -> dict[str, Any] | Rejection | None:
        """The decision of ``submit`` for the common case, in one function.

        A frame with a well-formed header (``fastframe``'s table) of a registered
        device whose counter has no copy waiting in the dedup window is decided
        here from start to end: the duplicate check, the tag under the device's
        current key, the payload (the kind's generated decoder, else the protocol's
        decoder), the registered kind and the replay decision. Returns the decoded
        frame (the replay state advanced: it is accepted) or the ``Rejection``, with
        the same reason and detail the general route gives. Returns None, having
        changed nothing, for every other case (a header the table does not answer, a
        copy to merge, a tag that fails while a key rotation is pending): ``submit``
        then takes the general route.

        What a frame needs of its device (the control byte of its registered kind
        with a 4-byte tag, the cached cipher, the kind's decoder) is one look-up in
        ``_fast``, filled by ``_entry`` on a device's first such frame and emptied
        when the registry changes; a frame with any other control byte gets its
        entry from ``_entry`` every time.

        Written out with locals and no calls between the steps, because on the
        hot path each Python call and attribute look-up costs as much as a
        fifth of the decryption (docs/performance.md); tests/gateway/
        test_pipeline_decide.py pins it to the general route.
        """
        n = len(buf)
        if n < _FAST_MIN or n > _MAX_FRAME:
            return None
        device_id, hi, lo = _UNPACK_IDS(buf, 1)
        fcnt = (hi << 16) | lo
        entry = self._fast.get(device_id)
        if entry is None or buf[0] != entry[0]:
            found = self._entry(buf, n, device_id, fcnt)
            if found is None or isinstance(found, Rejection):
                return found
            entry = found
        if self._window and (device_id, fcnt) in self._window:
            return None
        if buf.__class__ is not bytes:
            buf = bytes(buf)
        last = self._last.get(device_id)
        if last == fcnt and self._digests.get(device_id) == buf:
            return Rejection(DUPLICATE, device_id, fcnt, None)
        try:
            # protocol.frame.nonce(device_id, fcnt) and the 8 header bytes as associated
            # data (DIR_UPLINK 0, HEADER_LEN 8), as in Verifier.verify
            plain = entry[1].decrypt(_NONCE(0, device_id, fcnt), buf[8:], buf[:8])
        except InvalidTag:
            if device_id in self.next_keys:
                return None
            return Rejection(FRAME_TAG, device_id, fcnt, None)
        decoded = entry[2](plain, device_id, fcnt, entry[3])
        if decoded is None:
            try:
                decoded = pframe.decoded(entry[0] & 0x1F, device_id, fcnt, entry[3], plain)
            except FrameError as exc:
                return Rejection(exc.reason, device_id, fcnt, exc.detail)
        if entry[4] is not None:
            return Rejection(KIND_MISMATCH, device_id, fcnt, entry[4])
        if last is not None and fcnt <= last:
            reason = self.replay.check(device_id, fcnt, buf) or REPLAY   # never None here
            return Rejection(reason, device_id, fcnt, f"last accepted {last}")
        self._last[device_id] = fcnt          # ReplayGuard.advance, written out
        self._digests[device_id] = buf
        return decoded

    def _entry(self, buf: bytes, n: int, device_id: int,
               fcnt: int) -> _Entry | Rejection | None:
        """``decide``'s entry for a frame whose control byte is not its device's cached
        one: (control byte, cipher, decoder, tag length, kind-mismatch detail or None);
        the ``Rejection`` of an unknown device; None where the header is not the
        table's. An entry of the registered kind with a 4-byte tag is cached."""
        control = _CONTROL.get(buf[0])
        if control is None or n < control[2]:
            return None
        device = self.devices.get(device_id)
        if device is None:
            return Rejection(UNKNOWN_DEVICE, device_id, fcnt, None)
        kind_id, tag_len = control[0], control[1]
        kind = _FAST_KINDS[kind_id]
        mismatch = (None if kind.name == device.kind
                    else f"frame says {kind.name}, registered as {device.kind}")
        decode = kind.decode_python if self._python_decoders else kind.decode
        entry = (buf[0], self.verifier.cipher(device, tag_len), decode, tag_len, mismatch)
        if mismatch is None and tag_len == 4:
            self._fast[device_id] = entry
        return entry

    def submit(self, rx: Reception) -> Verdict:
        """Process one reception; the frame, if new and valid, enters the dedup window."""
        decided = self.decide(rx.frame)
        if decided is None:
            return self._submit_general(rx)
        if isinstance(decided, Rejection):
            reason, device_id, fcnt, detail = decided
            self.counters.reject(reason, rx.source)
            return Verdict("rejected", reason, device_id, fcnt, detail)
        device_id, fcnt = decided["device_id"], decided["fcnt"]
        raw = self._digests[device_id]
        self._window[(device_id, fcnt)] = Ready(
            decoded=decided, device=self.devices[device_id], raw=raw, digest=raw,
            deadline=rx.at + self.dedup_window_s, receptions=[rx],
            epoch=self.epochs.get(device_id, 0))
        return Verdict("pending", None, device_id, fcnt)

    def _submit_general(self, rx: Reception) -> Verdict:
        """``submit`` for every case ``decide`` leaves (and the reference it is tested on)."""
        buf = rx.frame
        if len(buf) > pframe.MAX_FRAME:
            return self._reject(rx, OVERSIZE, detail=f"{len(buf)} bytes")
        try:
            header_fields = fastframe.parse_header(buf)
        except FrameError as exc:
            return self._reject(rx, exc.reason, detail=exc.detail)
        device_id, fcnt = header_fields[1], header_fields[2]
        device = self.devices.get(device_id)
        if device is None:
            return self._reject(rx, UNKNOWN_DEVICE, device_id, fcnt)
        slot = (device_id, fcnt)
        waiting = self._window.get(slot)
        if waiting is not None and waiting.raw == buf:
            waiting.merge(rx, self.max_receivers)
            self.counters.inc("merged", rx.source)
            return Verdict("merged", None, device_id, fcnt)
        # A frame's fingerprint is its bytes: exact, and no hashing on the hot path.
        fingerprint = bytes(buf)
        if self.replay.is_last(device_id, fcnt, fingerprint):
            # Identical bytes to the frame accepted with this counter: already
            # verified, so no need to decrypt again.
            return self._reject(rx, DUPLICATE, device_id, fcnt)
        under_next = False
        try:
            decoded = self.verifier.verify(buf, device, header_fields)
        except FrameError as exc:
            nxt = self.next_keys.get(device_id)
            if exc.reason != FRAME_TAG or nxt is None:
                return self._reject(rx, exc.reason, device_id, fcnt, exc.detail)
            try:
                decoded = self.verifier.verify(buf, replace(device, key=nxt), header_fields)
            except FrameError as again:
                return self._reject(rx, again.reason, device_id, fcnt, again.detail)
            under_next = True
        if decoded["kind"] != device.kind:
            return self._reject(rx, KIND_MISMATCH, device_id, fcnt,
                                f"frame says {decoded['kind']}, registered as {device.kind}")
        reason = self.replay.check(device_id, fcnt, fingerprint)
        if reason is not None:
            last = self.replay.last(device_id)
            return self._reject(rx, reason, device_id, fcnt, f"last accepted {last}")
        self.replay.advance(device_id, fcnt, fingerprint)
        self._window[slot] = Ready(decoded=decoded, device=device, raw=bytes(buf),
                                   digest=fingerprint, deadline=rx.at + self.dedup_window_s,
                                   receptions=[rx], epoch=self.epochs.get(device_id, 0),
                                   under_next_key=under_next)
        return Verdict("pending", None, device_id, fcnt)

    def submit_reading(self, frame: Mapping[str, Any], receiver: Mapping[str, Any],
                       received_at: float, at: float, source: str = MODBUS) -> Verdict:
        """Process a reading that arrived already decoded (a Modbus poll).

        ``frame`` has the shape ``protocol.frame.decode`` returns (kind, kind_id,
        device_id, fcnt, tag_len, values); ``receiver`` is the reception metadata
        (``{"source": "modbus", "bus": ..., "unit_id": ...}``); ``source`` names the
        gateway source in counters. There is nothing to decrypt; the rest is as in
        ``submit``: kinds-table check, registry lookup and kind check, replay check
        (fingerprint: ``values_digest``) and the dedup window. The accepted reading's
        JSON says ``"source": "modbus"``.
        """
        rx = Reception(source, MODBUS, b"", received_at, at, receiver)
        device_id = frame.get("device_id")
        fcnt = frame.get("fcnt")
        kind_id = frame.get("kind_id")
        values = frame.get("values")
        kind: dict[str, Any] | None = (kinds.KINDS.get(kind_id) if type(kind_id) is int
                                       else None)
        if kind is None or kind["name"] != frame.get("kind"):
            return self._reject(rx, FRAME_KIND, detail=f"{frame.get('kind')!r}/{kind_id!r}")
        if type(device_id) is not int or not 0 <= device_id <= pframe.MAX_DEVICE_ID:
            return self._reject(rx, FRAME_DEVICE, detail=repr(device_id))
        if type(fcnt) is not int or not 0 <= fcnt <= pframe.MAX_FCNT:
            return self._reject(rx, FRAME_FCNT, device_id, detail=repr(fcnt))
        if not isinstance(values, dict):
            return self._reject(rx, PAYLOAD_SHAPE, device_id, fcnt, "values is not a map")
        try:
            kinds.pack(kind, values)
        except FrameError as exc:
            return self._reject(rx, exc.reason, device_id, fcnt, exc.detail)
        device = self.devices.get(device_id)
        if device is None:
            return self._reject(rx, UNKNOWN_DEVICE, device_id, fcnt)
        if kind["name"] != device.kind:
            return self._reject(rx, KIND_MISMATCH, device_id, fcnt,
                                f"reading is {kind['name']}, registered as {device.kind}")
        body = canonical_values(values)
        slot = (device_id, fcnt)
        waiting = self._window.get(slot)
        if waiting is not None and waiting.raw == body:
            waiting.merge(rx, self.max_receivers)
            self.counters.inc("merged", rx.source)
            return Verdict("merged", None, device_id, fcnt)
        fingerprint = digest(body)
        reason = self.replay.check(device_id, fcnt, fingerprint)
        if reason is not None:
            last = self.replay.last(device_id)
            return self._reject(rx, reason, device_id, fcnt, f"last accepted {last}")
        self.replay.advance(device_id, fcnt, fingerprint)
        decoded = {"kind": kind["name"], "kind_id": kind_id, "device_id": device_id,
                   "fcnt": fcnt, "tag_len": 0, "values": dict(values)}
        self._window[slot] = Ready(decoded=decoded, device=device, raw=body,
                                   digest=fingerprint, deadline=at + self.dedup_window_s,
                                   receptions=[rx], epoch=self.epochs.get(device_id, 0))
        return Verdict("pending", None, device_id, fcnt)

    # -- leaving the dedup window --------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When the oldest frame's dedup window closes (monotonic), or None."""
        for ready in self._window.values():
            return ready.deadline
        return None

    def due(self, now: float) -> list[Ready]:
        """Frames whose dedup window has closed by ``now``, in arrival order."""
        out: list[Ready] = []
        while self._window:
            slot, ready = next(iter(self._window.items()))
            if ready.deadline > now:
                break
            del self._window[slot]
            out.append(ready)
        return out

    def drain(self) -> list[Ready]:
        """Every waiting frame, window closed or not (at shutdown)."""
        out = list(self._window.values())
        self._window.clear()
        return out

    def waiting(self) -> int:
        """Frames in the dedup window."""
        return len(self._window)


def to_accepted(ready: Ready, *, prefix: str, gateway_id: str) -> Accepted:
    """The spool row of a released frame: its ``message.Reading`` and the reading's JSON
    (built here, in the ingest thread, with the epoch the frame was accepted in)."""
    decoded = ready.decoded
    reading = message.Reading(
        device_id=ready.device.device_id, kind=decoded["kind"], kind_id=decoded["kind_id"],
        fcnt=decoded["fcnt"], values=decoded["values"], received_at=ready.received_at,
        receivers=ready.receivers, source=ready.source_type, site=ready.device.site_info(),
        gateway_id=gateway_id, prefix=prefix, receivers_dropped=ready.receivers_dropped)
    return Accepted(device_id=ready.device.device_id, fcnt=decoded["fcnt"],
                    kind=decoded["kind"], topic=reading.topic(),
                    payload=reading.json(ready.epoch), alarm=message.is_alarm(decoded),
                    received_at=ready.received_at, reading=reading, epoch=ready.epoch)


def process_all(pipeline: Pipeline, receptions: Sequence[Reception]) -> list[Verdict]:
    """Submit several receptions in order (a convenience for tests and tools)."""
    return [pipeline.submit(rx) for rx in receptions]
