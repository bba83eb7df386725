"""``knute bench reliability``: fault injection on the whole path, with figures.

Each case runs real processes (the gateway as ``knute gateway run``, a real
Mosquitto, a simulated fleet sending real encrypted frames over a pty and the
UDP packet-forwarder protocol, the firmware on the MicroPython unix port) and
injects one kind of fault. Every case reports one row:

    case, runs, sent, accepted, delivered, lost, duplicates, crashes

- ``sent``: frames (or inputs) put on the gateway's links;
- ``accepted``: frames the gateway committed to its spool (the spool's
  persisted ``accepted_total``, which survives kill -9);
- ``delivered``: distinct reading ids the backend subscriber received;
- ``lost``: accepted - delivered - evicted (evictions are counted and reported
  by the gateway; a case that evicts says so);
- ``duplicates``: deliveries beyond the first of an id (always with identical
  bytes, or the case fails);
- ``crashes``: gateway processes that died by themselves, uncaught exceptions,
  or fuzz inputs that raised anything but the protocol's FrameError.

The cases double as the reliability test suite: tests/reliability/ calls the
same functions with short parameters (``make test``) and long ones
(``pytest -m slow``, ``make reliability``). docs/reliability.md describes the
method and shows the latest table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knute.gateway.errors import KnuteError
from knute.tools.bench.reliability.bad_input import case_bad_input, case_bad_input_daemon
from knute.tools.bench.reliability.city import case_broker_failover, case_cross_gateway_replay
from knute.tools.bench.reliability.cluster import case_broker_node_kill, case_broker_partition
from knute.tools.bench.reliability.damage import case_corrupt_files, case_disk_full
from knute.tools.bench.reliability.delivery import (
    case_broker_outage,
    case_kill9,
    case_no_puback,
    case_reconnect_storm,
)
from knute.tools.bench.reliability.harness import make_dir
from knute.tools.bench.reliability.power import case_firmware_power_cut
from knute.tools.bench.reliability.results import DESIGN_RATE_FPS, ROW_KEYS, CaseResult, key_leaks
from knute.tools.bench.reliability.security import case_security
from knute.tools.bench.reliability.udp_flood import case_udp_flood

# The cases and the checks tests/reliability/ calls (as ``rel.case_...``).
__all__ = ["DESIGN_RATE_FPS", "CaseResult", "add_arguments", "case_bad_input",
           "case_bad_input_daemon", "case_broker_failover", "case_broker_node_kill",
           "case_broker_outage", "case_broker_partition",
           "case_corrupt_files", "case_cross_gateway_replay",
           "case_disk_full", "case_firmware_power_cut", "case_kill9", "case_no_puback",
           "case_reconnect_storm", "case_security", "key_leaks", "render_table", "run"]


# ---------------------------------------------------------------- the command


@dataclass(frozen=True)
class Case:
    """One case with its full and quick parameters."""

    name: str
    run: Callable[..., CaseResult]
    full: dict[str, Any]
    quick: dict[str, Any]


CASES: tuple[Case, ...] = (
    Case("broker_outage_1s", case_broker_outage,
         {"outage_s": 1.0, "name": "broker_outage_1s"},
         {"outage_s": 1.0, "name": "broker_outage_1s"}),
    Case("broker_outage_30s", case_broker_outage,
         {"outage_s": 30.0, "name": "broker_outage_30s"},
         {"outage_s": 3.0, "name": "broker_outage_30s"}),
    Case("broker_outage_10min", case_broker_outage,
         {"frames": int(600 * DESIGN_RATE_FPS), "rate": 1000.0, "name": "broker_outage_10min"},
         {"frames": 1500, "rate": 800.0, "name": "broker_outage_10min"}),
    Case("no_puback", case_no_puback, {"hold_s": 40.0}, {"hold_s": 3.0}),
    Case("reconnect_storm", case_reconnect_storm, {"storm_s": 60.0}, {"storm_s": 6.0}),
    Case("gateway_kill9", case_kill9, {"cycles": 50}, {"cycles": 3}),
    Case("corrupt_files", case_corrupt_files, {}, {}),
    Case("disk_full", case_disk_full, {"free_kb": 4096, "overfill": 3.0},
         {"free_kb": 1024, "overfill": 1.5}),
    Case("bad_input", case_bad_input, {"frames": 1_000_000, "atheris_runs": 1_000_000},
         {"frames": 20_000, "atheris_runs": 20_000}),
    Case("bad_input_daemon", case_bad_input_daemon, {"frames": 50_000}, {"frames": 2000}),
    Case("security", case_security, {}, {}),
    Case("udp_flood", case_udp_flood, {"flood_s": 20.0},
         {"flood_s": 4.0, "rate": 10000.0, "legit_rate": 10.0}),
    Case("firmware_power_cut", case_firmware_power_cut, {"cuts": 100}, {"cuts": 5}),
    Case("broker_failover", case_broker_failover, {"down_s": 30.0}, {"down_s": 2.0}),
    Case("cross_gateway_replay", case_cross_gateway_replay, {"frames": 5000},
         {"frames": 300}),
    Case("broker_node_kill", case_broker_node_kill, {"down_s": 30.0, "rate": 200.0},
         {"down_s": 2.0}),
    Case("broker_partition", case_broker_partition, {"cut_s": 30.0, "rate": 200.0},
         {"cut_s": 2.0}),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``knute bench reliability``."""
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true",
                        help="each case once, short (about what make test runs)")
    parser.add_argument("--case", action="append", choices=[c.name for c in CASES],
                        help="run only this case (repeatable)")
    parser.add_argument("--workdir", help="keep every case's files (logs, spools) here")


def render_table(rows: Sequence[dict[str, Any]]) -> str:
    """The table as fixed-width text."""
    head = list(ROW_KEYS)
    cells = [[str(r[k]) for k in head] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h)
              for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w)
                       for i, (h, w) in enumerate(zip(head, widths, strict=True)))]
    for c in cells:
        lines.append("  ".join(v.ljust(w) if i == 0 else v.rjust(w)
                               for i, (v, w) in enumerate(zip(c, widths, strict=True))))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run the chosen cases and print the table (or JSON)."""
    chosen = [c for c in CASES if not args.case or c.name in args.case]
    tmp = None if args.workdir else tempfile.TemporaryDirectory(prefix="knute-rel-")
    base = Path(args.workdir) if args.workdir else Path(tmp.name if tmp else ".")
    results: list[CaseResult] = []
    try:
        for case in chosen:
            params = case.quick if args.quick else case.full
            if not args.json:
                print(f"running {case.name} ...", file=sys.stderr, flush=True)
            started = time.monotonic()
            try:
                res = case.run(make_dir(base / case.name), **params)
            except KnuteError as exc:
                res = CaseResult(case.name, problems=[f"case could not run: {exc}"])
            res.notes["seconds"] = round(time.monotonic() - started, 1)
            results.append(res)
    finally:
        if tmp is not None:
            tmp.cleanup()
    rows = [r.row() for r in results]
    if args.json:
        json.dump({"cases": rows}, sys.stdout)
        print()
    else:
        print(render_table(rows))
        for res in results:
            for problem in res.problems:
                print(f"{res.case}: {problem}", file=sys.stderr)
    return 0 if all(r.ok for r in results) else 1
