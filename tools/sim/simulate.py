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
import contextlib
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import KnuteError


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


@dataclass
class Outputs:
    """Where transmissions go, and what was sent."""

    serial_fd: int | None = None
    pty_link: str | None = None
    forwarders: list[Any] = field(default_factory=list)
    serial_records: int = 0
    udp_packets: int = 0

    def close(self) -> None:
        """Close everything this run opened."""
        if self.serial_fd is not None:
            os.close(self.serial_fd)
        if self.pty_link:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.pty_link)
        for fwd in self.forwarders:
            fwd.close()


def _open_outputs(args: argparse.Namespace) -> Outputs:
    import termios
    import tty

    from tools.sim.pktfwd import ForwarderClient

    out = Outputs()
    if args.serial_pty:
        master, slave = os.openpty()
        tty.setraw(slave)
        attrs = termios.tcgetattr(slave)
        attrs[3] &= ~termios.ECHO
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        slave_path = os.ttyname(slave)
        os.close(slave)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(args.serial_pty)
        os.symlink(slave_path, args.serial_pty)
        os.set_blocking(master, False)
        out.serial_fd, out.pty_link = master, args.serial_pty
    elif args.serial:
        try:
            out.serial_fd = os.open(args.serial, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError as err:
            raise KnuteError(f"cannot open serial device {args.serial}: {err.strerror}") from None
    if args.udp:
        host, _, port = args.udp.rpartition(":")
        if not host or not port.isdigit():
            raise KnuteError(f"--udp {args.udp!r}: expected HOST:PORT")
        for n in range(max(1, args.forwarders)):
            eui = bytes.fromhex("aa555a00000000") + bytes((n,))
            out.forwarders.append(ForwarderClient(eui, host, int(port)))
    if out.serial_fd is None and not out.forwarders:
        raise KnuteError("nowhere to send: give --serial-pty, --serial or --udp")
    return out


def _register(args: argparse.Namespace, fleet: Any) -> None:
    from gateway import registry

    if args.registry:
        reg = registry.Registry(args.registry)
        try:
            for node in fleet.nodes:
                if reg.get(node.device_id) is None:
                    reg.add(node.device_id, node.kind, node.key, name=f"sim-{node.device_id:08x}",
                            site="simulated")
        finally:
            reg.close()
    if args.csv:
        with open(args.csv, "w", encoding="utf-8") as f:
            f.write(registry.csv_header(with_location=False))
            for node in fleet.nodes:
                f.write(registry.csv_line(node.device_id, node.kind, node.key,
                                          f"sim-{node.device_id:08x}", "simulated"))


def _write_serial(out: Outputs, data: bytes) -> None:
    assert out.serial_fd is not None
    view = memoryview(data)
    deadline = time.monotonic() + 2.0
    while view and time.monotonic() < deadline:
        try:
            n = os.write(out.serial_fd, view)
            view = view[n:]
        except BlockingIOError:
            time.sleep(0.002)  # the reader is behind; a real UART would block too
        except OSError:
            return  # the reader went away (gateway restarted); the line is dead air


def _send(out: Outputs, tx: Any, rng: Any) -> None:
    from protocol import stream
    from tools.sim.pktfwd import EU868_CHANNELS_MHZ, rxpk

    if out.serial_fd is not None:
        if tx.node is None:
            _write_serial(out, tx.payload)  # garbage on the line
        else:
            _write_serial(out, stream.encode_record(stream.REC_FRAME, tx.payload))
        out.serial_records += 1
    if out.forwarders:
        if tx.node is None:
            rng.choice(out.forwarders).send_raw(tx.payload)
            return
        hearing = rng.sample(out.forwarders, rng.randint(1, len(out.forwarders)))
        chan = rng.randrange(3)
        for fwd in hearing:
            fwd.push([rxpk(tx.payload, rssi_dbm=rng.randint(-125, -70),
                           lsnr_db=round(rng.uniform(-12, 9), 1),
                           freq_mhz=EU868_CHANNELS_MHZ[chan], sf=rng.choice([7, 9, 10, 12]),
                           chan=chan)])
            out.udp_packets += 1


def run(args: argparse.Namespace) -> int:
    """Run the fleet until --for elapses or Ctrl-C, then print a summary."""
    from tools.sim.fleet import FAULTS, Fleet

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
    _register(args, fleet)
    boards: list[Any] = []
    if args.real_firmware:
        if not args.registry:
            raise KnuteError("--real-firmware needs --registry: the boards are provisioned "
                             "into it")
        import tempfile
        from pathlib import Path

        from tools.sim.firmware_nodes import start_boards

        flash_root = Path(tempfile.mkdtemp(prefix="knute-sim-boards-"))
        boards = start_boards(args.real_firmware, flash_root, args.registry, start, args.speed)
        for board in boards:
            board.run()
            if not args.json:
                print(f"firmware node {board.device_id:08x}: serial {board.uart_path}",
                      flush=True)
    out = _open_outputs(args)
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
                _send(out, tx, fleet.rng)
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
