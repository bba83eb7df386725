"""The simulate engine: where a simulated fleet's transmissions go, and how.

``open_outputs`` opens the serial line (a new pty behind a symlink, or an
existing device) and the simulated packet forwarders; ``send`` puts one
transmission on them (a link record on the line; PUSH_DATA from one to all
forwarders, so the gateway hears duplicates); ``register`` writes the fleet
into a registry or a CSV file. ``knute simulate`` (tools/cli/simulate.py)
drives them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knute.gateway.errors import KnuteError
from knute.tools.rig.ptys import Pty


@dataclass
class Outputs:
    """Where transmissions go, and what was sent."""

    serial_fd: int | None = None
    pty_link: str | None = None
    forwarders: list[Any] = field(default_factory=list)
    serial_records: int = 0
    udp_packets: int = 0
    # One "HOST:PORT" per forwarder (forwarder i sends to --udp address i mod N), and the
    # packets sent to each address.
    forwarder_targets: list[str] = field(default_factory=list)
    udp_by_target: dict[str, int] = field(default_factory=dict)
    links: Any = None           # device id -> tools.sim.pktfwd.NodeLink (radio outputs)

    def close(self) -> None:
        """Close everything this run opened."""
        if self.serial_fd is not None:
            os.close(self.serial_fd)
        if self.pty_link:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.pty_link)
        for fwd in self.forwarders:
            fwd.close()


def open_outputs(args: argparse.Namespace) -> Outputs:
    """Open the serial line and the forwarders the options name."""
    from knute.tools.sim.pktfwd import ForwarderClient, node_links

    out = Outputs(links=node_links(getattr(args, "seed", 1)))
    if args.serial_pty:
        line = Pty(Path(args.serial_pty))      # replaces whatever the link pointed at
        os.set_blocking(line.master, False)
        out.serial_fd, out.pty_link = line.master, args.serial_pty
    elif args.serial:
        try:
            out.serial_fd = os.open(args.serial, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError as err:
            raise KnuteError(f"cannot open serial device {args.serial}: {err.strerror}") from None
    targets = _udp_targets(args.udp)
    if targets:
        # Forwarder i reaches gateway i mod N: a packet heard by several forwarders
        # reaches several gateways (the same frame, the same reading id).
        out.udp_by_target = dict.fromkeys(targets, 0)
        for n in range(max(1, args.forwarders, len(targets))):
            host, port = targets[n % len(targets)].rsplit(":", 1)
            eui = bytes.fromhex("aa555a00000000") + bytes((n,))
            out.forwarders.append(ForwarderClient(eui, host, int(port)))
            out.forwarder_targets.append(targets[n % len(targets)])
    if out.serial_fd is None and not out.forwarders:
        raise KnuteError("nowhere to send: give --serial-pty, --serial or --udp")
    return out


def _udp_targets(udp: str | list[str] | None) -> list[str]:
    """The --udp addresses, each checked as HOST:PORT, in order, without repeats."""
    if not udp:
        return []
    targets: list[str] = []
    for addr in [udp] if isinstance(udp, str) else udp:
        host, _, port = addr.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise KnuteError(f"--udp {addr!r}: expected HOST:PORT")
        if addr not in targets:
            targets.append(addr)
    return targets


def register(args: argparse.Namespace, fleet: Any,
             polled: Sequence[tuple[int, str, bytes]] = ()) -> None:
    """Register the fleet (--registry) and/or write it as CSV (--csv).

    ``polled`` adds (device id, kind, key) devices the gateway polls (the city's
    bulk meters on Modbus): the gateway accepts only registered devices' readings.
    """
    from knute.gateway import device_csv, registry

    devices = [(n.device_id, n.kind, n.key) for n in fleet.nodes] + list(polled)
    if args.registry:
        reg = registry.Registry(args.registry)
        try:
            for device_id, kind, key in devices:
                if reg.get(device_id) is None:
                    reg.add(device_id, kind, key, name=f"sim-{device_id:08x}",
                            site="simulated")
        finally:
            reg.close()
    if args.csv:
        with open(args.csv, "w", encoding="utf-8") as f:
            f.write(device_csv.csv_header(with_location=False))
            for device_id, kind, key in devices:
                f.write(device_csv.csv_line(device_id, kind, key,
                                            f"sim-{device_id:08x}", "simulated"))


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


def send(out: Outputs, tx: Any, rng: Any) -> None:
    """Put one transmission on every output."""
    from knute.protocol import stream

    if out.serial_fd is not None:
        if tx.node is None:
            _write_serial(out, tx.payload)  # garbage on the line
        else:
            _write_serial(out, stream.encode_record(stream.REC_FRAME, tx.payload))
        out.serial_records += 1
    if out.forwarders:
        if tx.node is None:
            n = rng.randrange(len(out.forwarders))
            out.forwarders[n].send_raw(tx.payload)
            return
        hearing = rng.sample(range(len(out.forwarders)), rng.randint(1, len(out.forwarders)))
        # The node's own SF and a channel of the plan; each concentrator hears the
        # same uplink on the same channel, a few dB apart.
        copies = out.links[tx.node.device_id].heard_by(tx.payload, rng, len(hearing))
        for n, pkt in zip(hearing, copies, strict=True):
            out.forwarders[n].push([pkt])
            out.udp_packets += 1
            out.udp_by_target[out.forwarder_targets[n]] += 1
