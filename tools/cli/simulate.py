"""``knute simulate``: a fleet of nodes sending real encrypted frames to a gateway.

The fleet (tools/sim/fleet.py) runs on simulated time, ``--speed`` times faster than
the wall clock. Frames go out over a serial line (a pty this command creates,
``--serial-pty LINK``, or an existing device, ``--serial PATH``) as link records,
over the Semtech UDP packet-forwarder protocol (``--udp HOST:PORT``) from
``--forwarders`` simulated LoRa gateways whose coverage overlaps (each packet is
heard by one to all of them, so the gateway sees duplicates), or both. Thousands
of nodes run in-process; ``--real-firmware K`` adds K water meters running the
real firmware on virtual boards, each on a serial line of its own.

The devices must be in the gateway's registry: ``--registry PATH`` registers
them there first, ``--csv FILE`` writes them for ``knute devices import``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from typing import Any

from knute.gateway.errors import KnuteError
from knute.tools.sim.simulate import open_outputs, register, send


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    """Options of ``knute simulate``."""
    parser.add_argument("--meters", type=int, default=10, help="water meters (default 10)")
    parser.add_argument("--air", type=int, default=2, help="air-quality nodes (default 2)")
    parser.add_argument("--speed", type=float, default=3600.0,
                        help="simulated seconds per real second (default 3600)")
    parser.add_argument("--for", dest="duration", type=float, default=None,
                        help="stop after this many real seconds (default: until Ctrl-C)")
    parser.add_argument("--serial-pty", metavar="LINK",
                        help="create a pty, point the symlink LINK at it, send link records")
    parser.add_argument("--serial", metavar="PATH", help="send link records to this device")
    parser.add_argument("--udp", metavar="HOST:PORT",
                        help="send as packet forwarders to the gateway's UDP port")
    parser.add_argument("--forwarders", type=int, default=2,
                        help="simulated packet forwarders with overlapping coverage (default 2)")
    parser.add_argument("--faults", default="",
                        help="comma-separated: leak,burst,tamper,sensor,garbage,truncated,"
                        "replay,reset")
    parser.add_argument("--fault-rate", type=float, default=0.02,
                        help="chance per send that a fault is injected (default 0.02)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--first-device-id", default="10000000",
                        help="device id of the first node (8 hex digits)")
    parser.add_argument("--real-firmware", type=int, default=0, metavar="K",
                        help="also run K water meters on the real firmware in virtual boards "
                        "(needs --registry); each prints the serial port the gateway reads")
    parser.add_argument("--registry", help="register the fleet in this registry first")
    parser.add_argument("--csv", help="write the fleet as CSV for knute devices import")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def run(args: argparse.Namespace) -> int:
    """Run the fleet until --for elapses or Ctrl-C, then print a summary."""
    from knute.tools.sim.fleet import FAULTS, Fleet

    faults = tuple(f for f in args.faults.split(",") if f)
    if set(faults) - set(FAULTS):
        raise KnuteError(f"--faults: unknown {','.join(sorted(set(faults) - set(FAULTS)))}; "
                         f"known: {','.join(FAULTS)}")
    if args.meters < 0 or args.air < 0 or args.meters + args.air == 0:
        raise KnuteError("--meters and --air: at least one node")
    if args.speed <= 0:
        raise KnuteError("--speed must be positive")
    start = time.time()
    fleet = Fleet(args.meters, args.air, start=start, seed=args.seed, faults=faults,
                  fault_rate=args.fault_rate, first_device_id=int(args.first_device_id, 16))
    register(args, fleet)
    boards: list[Any] = []
    if args.real_firmware:
        if not args.registry:
            raise KnuteError("--real-firmware needs --registry: the boards are provisioned "
                             "into it")
        import tempfile
        from pathlib import Path

        from knute.tools.sim.firmware_nodes import start_boards

        flash_root = Path(tempfile.mkdtemp(prefix="knute-sim-boards-"))
        boards = start_boards(args.real_firmware, flash_root, args.registry, start, args.speed)
        for board in boards:
            board.run()
            if not args.json:
                print(f"firmware node {board.device_id:08x}: serial {board.uart_path}",
                      flush=True)
    out = open_outputs(args)
    stop = False

    def _stop(*_: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    if out.pty_link and not args.json:
        print(f"serial: {out.pty_link} -> {os.readlink(out.pty_link)}", flush=True)
    sent = valid = 0
    wall0 = time.monotonic()
    try:
        while not stop:
            elapsed = time.monotonic() - wall0
            if args.duration is not None and elapsed >= args.duration:
                break
            now = start + elapsed * args.speed
            for tx in fleet.due(now):
                send(out, tx, fleet.rng)
                sent += 1
                valid += tx.valid
            for fwd in out.forwarders:
                fwd.keepalive()
                fwd.read_acks()
            wait = (fleet.next_time() - now) / args.speed
            time.sleep(min(max(wait, 0.001), 0.2))
    except KeyboardInterrupt:
        pass
    finally:
        for fwd in out.forwarders:
            fwd.read_acks()
        out.close()
        for board in boards:
            board.close()
    summary = {
        "nodes": len(fleet.nodes),
        "simulated_s": round((time.monotonic() - wall0) * args.speed),
        "sent": sent,
        "valid": valid,
        "frames": sum(n.sent for n in fleet.nodes),
        "serial_records": out.serial_records,
        "udp_packets": out.udp_packets,
        "push_acked": sum(f.acked for f in out.forwarders),
        "faults": {k: v for k, v in fleet.injected.items() if v},
        "firmware_nodes": [{"device": f"{b.device_id:08x}", "serial": b.uart_path,
                            "sent": len(b.sent)} for b in boards],
    }
    if args.json:
        json.dump(summary, sys.stdout)
        print()
    else:
        print(f"{summary['nodes']} nodes, {summary['simulated_s'] / 3600:.1f} h simulated: "
              f"{summary['frames']} frames ({summary['valid']} a gateway should accept), "
              f"{summary['serial_records']} serial records, {summary['udp_packets']} UDP "
              f"packets ({summary['push_acked']} acknowledged)")
        if summary["faults"]:
            print("faults injected: " + ", ".join(f"{k} {v}" for k, v in
                                                   summary["faults"].items()))
    return 0
