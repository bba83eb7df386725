"""``knute simulate``: a fleet of nodes sending real encrypted frames to a gateway.

The fleet (tools/sim/fleet.py) runs on simulated time, ``--speed`` times faster than
the wall clock. Frames go out over a serial line (a pty this command creates,
``--serial-pty LINK``, or an existing device, ``--serial PATH``) as link records,
over the Semtech UDP packet-forwarder protocol (``--udp HOST:PORT``) from
``--forwarders`` simulated LoRa gateways whose coverage overlaps (each packet is
heard by one to all of them, so the gateway sees duplicates), or both. ``--udp``
repeated spreads the forwarders over several gateways (forwarder i sends to
address i mod N), so a packet heard by several forwarders reaches several
gateways; the summary counts the packets sent to each address. Thousands
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
    parser.add_argument("--start", type=float, default=None, metavar="UNIX_S",
                        help="simulated time the run begins (default: now); a start in the "
                        "past keeps the simulated hours behind the gateway's clock, which "
                        "resolves a profile's hours against its own")
    parser.add_argument("--wall-start", type=float, default=None, metavar="UNIX_S",
                        help="wall-clock time at which the simulated clock reads --start "
                        "(default: now); a later time holds the run until then, so that "
                        "what consumes it (a gateway on the city's clock) can be up first")
    parser.add_argument("--clock-file", default=None, metavar="FILE",
                        help="hold the simulated clock at --start, once set up (pty, registry, "
                        "modbus-sim listening), until FILE gives its epoch: "
                        '{"simulated": <--start>, "wall": <unix s>}, written (atomically) '
                        "when every process of the run is up; a gateway with [gateway] "
                        "clock_file on the same file starts its clock with it")
    parser.add_argument("--for", dest="duration", type=float, default=None,
                        help="stop after this many real seconds (default: until Ctrl-C)")
    parser.add_argument("--serial-pty", metavar="LINK",
                        help="create a pty, point the symlink LINK at it, send link records")
    parser.add_argument("--serial", metavar="PATH", help="send link records to this device")
    parser.add_argument("--udp", metavar="HOST:PORT", action="append",
                        help="send as packet forwarders to the gateway's UDP port; repeat "
                        "for several gateways (forwarder i sends to address i mod N)")
    parser.add_argument("--forwarders", type=int, default=2,
                        help="simulated packet forwarders with overlapping coverage (default 2, "
                        "at least one per --udp address)")
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
    parser.add_argument("--city", action="store_true",
                        help="simulate a city instead of --meters/--air: districts of "
                        "households (tools/sim/city.py) with their bulk meters, and leaks")
    parser.add_argument("--modbus", metavar="HOST:PORT",
                        help="with --city: serve the bulk meters through knute modbus-sim "
                        "on this Modbus TCP address (units 1..N, listed in the summary)")
    from knute.tools.sim.city import add_city_arguments

    add_city_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Run the fleet until --for elapses or Ctrl-C, then print a summary."""
    from knute.tools.sim.fleet import FAULTS, Fleet

    faults = tuple(f for f in args.faults.split(",") if f)
    if set(faults) - set(FAULTS):
        raise KnuteError(f"--faults: unknown {','.join(sorted(set(faults) - set(FAULTS)))}; "
                         f"known: {','.join(FAULTS)}")
    if not args.city and (args.meters < 0 or args.air < 0 or args.meters + args.air == 0):
        raise KnuteError("--meters and --air: at least one node")
    if args.modbus and not args.city:
        raise KnuteError("--modbus serves the bulk meters of --city: give --city")
    if args.speed <= 0:
        raise KnuteError("--speed must be positive")
    if args.clock_file is not None and (args.wall_start is not None or args.start is None):
        raise KnuteError("--clock-file needs --start (where the clock is held) and no "
                         "--wall-start (the file gives it)")
    wall_start = time.time() if args.wall_start is None else args.wall_start
    start = wall_start if args.start is None else args.start
    city_info: dict[str, Any] | None = None
    modbus: Any = None
    polled: list[tuple[int, str, bytes]] = []
    if args.city:
        from knute.tools.sim.city import city_from_args
        from knute.tools.sim.city_nodes import bulk_units, city_fleet, gateway_clock_start

        city = city_from_args(args, args.seed, start)
        fleet = city_fleet(city, start, args.seed, faults, args.fault_rate)
        city_info = _city_summary(city, args.modbus)
        city_info["clock"] = {"start": start, "wall_start": wall_start, "speed": args.speed,
                              "gateway_clock_start": gateway_clock_start(start, wall_start,
                                                                         args.speed)}
        if args.modbus:      # a polled meter has no key on the air; the registry wants one
            import random

            keys = random.Random(f"{args.seed}:bulk-keys")
            polled = [(int(device, 16), "water_meter", keys.randbytes(16))
                      for _, _, _, device in bulk_units(city)]
    else:
        fleet = Fleet(args.meters, args.air, start=start, seed=args.seed, faults=faults,
                      fault_rate=args.fault_rate, first_device_id=int(args.first_device_id, 16))
    register(args, fleet, polled)
    if args.modbus:
        modbus = _start_modbus(args, start, wall_start)
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
    if args.clock_file is not None:
        if not args.json:
            print(f"clock held: simulated {start:.3f} until {args.clock_file} gives its epoch",
                  flush=True)
        try:
            released = _await_clock_file(args.clock_file, start, lambda: stop)
        except BaseException:             # a bad file or Ctrl-C while held: stop modbus-sim
            _close(out, boards, modbus)
            raise
        wall_start = time.time() if released is None else released    # None: stopped
        if city_info is not None:
            city_info["clock"].update(wall_start=wall_start, gateway_clock_start=(
                gateway_clock_start(start, wall_start, args.speed)))
    if city_info is not None and not args.json:
        clock_start = city_info["clock"]["gateway_clock_start"]
        print(f"city clock: simulated {start:.3f} at wall {wall_start:.3f}, "
              f"speed {args.speed:g}"
              + ("" if clock_start is None else
                 f" (a gateway on it: clock_speed = {args.speed:g}, "
                 f"clock_start = {clock_start:.3f})"), flush=True)
        for dma in city_info["districts"]:
            meters = ", ".join(f"{m['side']} {m['device']}"
                               + (f" (Modbus unit {m['unit']})" if args.modbus else "")
                               for m in dma["bulk_meters"])
            print(f"district {dma['name']}: {dma['households']} households; {meters}",
                  flush=True)
        for leak in city_info["leaks"]:
            print(f"leak: {leak['where']} {leak['subject']} {leak['size_l_h']:g} L/h "
                  f"from {leak['start']}", flush=True)
    sent = valid = 0
    wall0 = time.monotonic()
    if args.city or args.wall_start is not None or args.clock_file is not None:
        # The clock reads ``start`` at wall_start (modbus-sim runs on it too), set up
        # since then or to come (--wall-start: nothing is due before it).
        wall0 -= time.time() - wall_start
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
        _close(out, boards, modbus)
    summary = {
        "nodes": len(fleet.nodes),
        "simulated_s": round((time.monotonic() - wall0) * args.speed),
        "sent": sent,
        "valid": valid,
        "frames": sum(n.sent for n in fleet.nodes),
        "serial_records": out.serial_records,
        "udp_packets": out.udp_packets,
        "push_acked": sum(f.acked for f in out.forwarders),
        "udp_per_gateway": [{"address": addr, "forwarders": out.forwarder_targets.count(addr),
                             "packets": n} for addr, n in out.udp_by_target.items()],
        "faults": {k: v for k, v in fleet.injected.items() if v},
        "firmware_nodes": [{"device": f"{b.device_id:08x}", "serial": b.uart_path,
                            "sent": len(b.sent)} for b in boards],
    }
    if city_info is not None:
        summary["city"] = city_info
    if args.json:
        json.dump(summary, sys.stdout)
        print()
    else:
        print(f"{summary['nodes']} nodes, {summary['simulated_s'] / 3600:.1f} h simulated: "
              f"{summary['frames']} frames ({summary['valid']} a gateway should accept), "
              f"{summary['serial_records']} serial records, {summary['udp_packets']} UDP "
              f"packets ({summary['push_acked']} acknowledged)")
        if len(out.udp_by_target) > 1:
            print("UDP per gateway: " + ", ".join(
                f"{g['address']} {g['packets']} ({g['forwarders']} forwarders)"
                for g in summary["udp_per_gateway"]))
        if summary["faults"]:
            print("faults injected: " + ", ".join(f"{k} {v}" for k, v in
                                                   summary["faults"].items()))
    return 0


def _city_summary(city: Any, modbus: str | None) -> dict[str, Any]:
    """The city's districts, bulk meters (with Modbus units) and leaks, for the summary."""
    from datetime import UTC, datetime

    from knute.tools.sim.city_nodes import bulk_units

    units = {(district, side): (unit, device) for unit, district, side, device
             in bulk_units(city)}
    return {
        "modbus": modbus,
        "districts": [{
            "name": dma.name, "households": len(dma.households),
            "household_devices": list(dma.households),
            "bulk_meters": [{"side": side, "device": units[(dma.name, side)][1],
                             "unit": units[(dma.name, side)][0]}
                            for side in ("inflow", "outflow") if (dma.name, side) in units],
        } for dma in city.districts],
        "leaks": [{"where": leak.where, "district": leak.district, "subject": leak.subject,
                   "size_l_h": leak.size_l_h,
                   "start": datetime.fromtimestamp(leak.start, UTC).strftime(
                       "%Y-%m-%dT%H:%M:%SZ")} for leak in city.leaks],
    }


def _close(out: Any, boards: list[Any], modbus: Any) -> None:
    """Stop what the run started: its outputs, virtual boards and modbus-sim."""
    for fwd in out.forwarders:
        fwd.read_acks()
    out.close()
    for board in boards:
        board.close()
    if modbus is not None:
        modbus.terminate()
        modbus.wait(10)


def _await_clock_file(path: str, start: float, stopping: Any) -> float | None:
    """The wall time the clock file at ``path`` starts the clock at (it must hold ``start``).

    None if ``stopping()`` turned true first (SIGTERM while held).
    """
    from knute.gateway.simclock import POLL_S, ClockFileError, read_clock_file

    while not stopping():
        try:
            epoch = read_clock_file(path)
        except ClockFileError as exc:
            raise KnuteError(f"--clock-file {exc}") from None
        if epoch is not None:
            if abs(epoch[0] - start) > 1e-3:
                raise KnuteError(f"--clock-file {path}: simulated {epoch[0]:.3f} is not "
                                 f"--start {start:.3f}")
            return epoch[1]
        time.sleep(POLL_S)
    return None


def _start_modbus(args: argparse.Namespace, start: float, wall_start: float) -> Any:
    """``knute modbus-sim`` serving the city's bulk meters on the same simulated clock."""
    import select
    import subprocess

    command = [sys.executable, "-m", "knute.tools.cli", "modbus-sim", "--tcp", args.modbus,
               "--json",
               "--city", str(args.seed), "--city-clock", f"{start}:{wall_start}:{args.speed}",
               *(["--city-clock-file", args.clock_file] if args.clock_file else []),
               "--districts", str(args.districts), "--households", str(args.households),
               "--leaks", args.leaks, "--seed", str(args.seed)]
    if args.leak_start is not None:
        command += ["--leak-start", str(args.leak_start)]
    if args.leak_district is not None:
        command += ["--leak-district", args.leak_district]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    ready, _, _ = select.select([proc.stdout], [], [], 60.0)
    line = proc.stdout.readline() if ready else ""
    if not line.startswith("{"):
        proc.kill()
        error = proc.stderr.read().strip().splitlines()
        raise KnuteError(f"--modbus {args.modbus}: modbus-sim did not start"
                         + (f": {error[-1]}" if error else ""))
    return proc
