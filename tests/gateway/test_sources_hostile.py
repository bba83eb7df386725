"""A hostile sender against the running gateway (a real process): random gateway EUIs,
random unregistered devices, a node console line that tries to forge log lines.

Each test fails on a gateway that keeps a table per EUI without bound, logs a line
per unknown device or writes a node's text into its log as it came."""

from __future__ import annotations

import json
import os
import random
import socket
import struct
import time
import tty
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from knute.gateway.config import UdpSourceConfig
from knute.gateway.sources import udp_forwarder as uf
from knute.gateway.status import Counters
from knute.protocol import frame, stream
from knute.tools.bench.reliability.harness import GatewayProc
from knute.tools.rig.broker import Broker, free_port
from knute.tools.rig.wait import wait_for
from knute.tools.sim.pktfwd import pull_data, push_data, rxpk

KEY = bytes(range(16))
DEVICE = 0x00001234
GOOD = frame.encode("water_meter", DEVICE, 1,
                    {"index": 5, "profile_end_h": 1, "battery": 20, "profile": [1]}, KEY)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = Broker(tmp_path_factory.mktemp("mosquitto"), "mosquitto")
    b.start()
    yield b
    b.stop()


@pytest.fixture
def pty_pair() -> Iterator[tuple[int, str]]:
    master, slave = os.openpty()
    tty.setraw(slave)
    yield master, os.ttyname(slave)
    for fd in (master, slave):
        os.close(fd)


def gateway(root: Path, broker: Broker, **kw: Any) -> GatewayProc:
    return GatewayProc(root, broker.port, [(DEVICE, "water_meter", KEY)], **kw)


def blast(port: int, datagrams: list[bytes], gw: GatewayProc, per_socket: int = 1000,
          source: str = "udp") -> None:
    """Send every datagram, a new socket (source address) every ``per_socket`` of them,
    waiting after each socket's share until the gateway has read it (nothing is lost
    to a full receive buffer, so the counts below are exact)."""
    sent = gw.status()["sources"][source]["datagrams"]
    for start in range(0, len(datagrams), per_socket):
        chunk = datagrams[start:start + per_socket]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for i in range(0, len(chunk), 100):
                for dgram in chunk[i:i + 100]:
                    sock.sendto(dgram, ("127.0.0.1", port))
                target = sent + i + len(chunk[i:i + 100])

                def read(target: int = target) -> bool:
                    return bool(gw.status()["sources"][source]["datagrams"] >= target)

                wait_for(read, 60, "the gateway to read the datagrams")
        sent += len(chunk)


def random_eui(rng: random.Random) -> bytes:
    return rng.randrange(1 << 64).to_bytes(8, "big")


def test_pull_data_from_random_euis_keeps_the_tables_and_status_small(
        tmp_path: Path, broker: Broker) -> None:
    port = free_port()
    gw = gateway(tmp_path, broker, udp_port=port)
    try:
        gw.start()
        rng = random.Random(3)
        n = 20_000
        blast(port, [pull_data(random_eui(rng)) for _ in range(n)], gw)
        st = gw.status()
        assert len(json.dumps(st)) < 16_000
        udp = st["sources"]["udp"]
        assert udp["datagrams"] == n
        # Strangers share a budget: what it sheds is counted, the rest is remembered.
        heard = n - udp["rejected_by_reason"].get("pf_rate", 0)
        assert heard > 2 * uf.UdpForwarderSource.MAX_GATEWAYS
        assert udp["gateways_heard"] == uf.UdpForwarderSource.MAX_GATEWAYS
        assert udp["gateways_evicted"] == heard - uf.UdpForwarderSource.MAX_GATEWAYS
        assert len(udp["gateways"]) == uf.UdpForwarderSource.STATUS_GATEWAYS
        assert gw.stop() == 0
    finally:
        gw.close()


def test_random_unknown_devices_do_not_flood_the_log(tmp_path: Path, broker: Broker) -> None:
    port = free_port()
    gw = gateway(tmp_path, broker, udp_port=port)
    try:
        gw.start()
        rng = random.Random(4)
        n = 10_000
        datagrams = []
        for _ in range(n):
            forged = GOOD[:1] + rng.randrange(1 << 32).to_bytes(4, "big") + GOOD[5:]
            datagrams.append(push_data(random_eui(rng), [rxpk(forged, rssi_dbm=-90,
                                                              lsnr_db=1.0, freq_mhz=868.1,
                                                              sf=9)]))
        before = gw.log.stat().st_size
        blast(port, datagrams, gw)
        wait_for(lambda: sum(gw.status()["rejected"].get(r, 0)
                                 for r in ("unknown_device", "pf_rate")) == n, 60,
                     "the unknown devices to be counted")
        assert gw.status()["rejected"]["unknown_device"] > n // 5
        assert gw.stop() == 0
        grown = gw.log.stat().st_size - before
        log = gw.log_text()
        # Counters keep the exact number; the log has one line, then one summary.
        assert grown < 4000, log[-2000:]
        assert log.count("from unknown device") == 2, log[-2000:]
        assert "more like it in the last" in log
    finally:
        gw.close()


def test_a_node_log_record_cannot_forge_a_log_line(tmp_path: Path, broker: Broker,
                                                   pty_pair: tuple[int, str]) -> None:
    master, path = pty_pair
    gw = gateway(tmp_path, broker, serial_url=path, log_level="debug")
    forged = "2026-01-01 00:00:00,000 WARNING knute.gateway: FORGED by the node"
    try:
        gw.start()
        os.write(master, stream.encode_record(
            stream.REC_LOG, f"boot ok\n{forged}\r\n\x1b[2J\x1b[1;1Hcleared".encode()))
        os.write(master, stream.encode_record(stream.REC_FRAME, GOOD))
        wait_for(lambda: gw.status()["totals"]["accepted"] == 1, 30, "the frame")
        assert gw.stop() == 0
        log = gw.log_text()
        assert "node log: boot ok\\n2026-01-01" in log
        assert not any(line.startswith(forged[:23]) for line in log.splitlines())
        assert "\x1b" not in log and "\r" not in log
    finally:
        gw.close()


# -------------------------------------------------------------- in process


def source(**limits: Any) -> tuple[uf.UdpForwarderSource, list[Any], Counters]:
    got: list[Any] = []
    counters = Counters()
    src = uf.UdpForwarderSource(UdpSourceConfig(name="pf", host="127.0.0.1", port=0),
                                got.append, counters)
    for name, value in limits.items():
        setattr(src, name, value)
    return src, got, counters


def test_token_bucket_passes_its_rate() -> None:
    bucket = uf.TokenBucket(rate=10.0, burst=5.0)
    assert [bucket.allow(0.0) for _ in range(7)] == [True] * 5 + [False] * 2
    assert bucket.allow(0.1) and not bucket.allow(0.1)
    assert [bucket.allow(100.0) for _ in range(6)] == [True] * 5 + [False]   # burst caps


def test_buckets_pass_the_rate_and_bound_their_table() -> None:
    buckets = uf.Buckets(rate=10.0, burst=5.0, max_keys=3)
    assert [buckets.allow("a", 0.0) for _ in range(7)] == [True] * 5 + [False] * 2
    assert buckets.allow("a", 0.1)                   # one token back after 0.1 s
    assert not buckets.allow("a", 0.1)
    for key in "bcdef":
        assert buckets.allow(key, 0.2)
    assert len(buckets) == 3 and buckets.evicted == 3


def test_one_eui_over_its_rate_is_shed_before_its_json_is_parsed() -> None:
    src, got, counters = source()
    src._euis = uf.Buckets(rate=1.0, burst=3.0, max_keys=16)
    eui = bytes.fromhex("0102030405060708")
    try:
        replies = []
        for _ in range(10):
            replies += src.handle(push_data(eui, [rxpk(GOOD, rssi_dbm=-90, lsnr_db=1.0,
                                                        freq_mhz=868.1, sf=9)]), 1.0, 1.0)
        # Also from another EUI: not affected.
        replies += src.handle(pull_data(bytes(8)), 1.0, 1.0)
    finally:
        src.stop()
    assert len(got) == 3 and len(replies) == 4
    assert counters.rejected(uf.PF_RATE) == 7 and src.shed == 7


def test_a_flooding_address_is_shed_and_another_still_heard() -> None:
    src, got, counters = source()
    src._peers = uf.Buckets(rate=1.0, burst=50.0, max_keys=16)
    src.start()
    flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    flood.bind(("127.0.0.2", 0))                  # another host
    legit = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    legit.settimeout(5.0)
    try:
        for _ in range(500):
            flood.sendto(pull_data(bytes(8)), src.address)
        deadline = time.monotonic() + 20
        while src.datagrams < 500 and time.monotonic() < deadline:
            time.sleep(0.02)
        legit.sendto(push_data(bytes.fromhex("0102030405060708"),
                               [rxpk(GOOD, rssi_dbm=-90, lsnr_db=1.0, freq_mhz=868.1, sf=9)]),
                     src.address)
        ack = legit.recv(64)
        assert len(ack) == 4 and ack[3] == 1
        assert src.shed >= 400 and counters.rejected(uf.PF_RATE) == src.shed
        assert [rx.frame for rx in got] == [GOOD]
    finally:
        flood.close()
        legit.close()
        src.stop()


def test_status_entry_lists_the_last_gateways_heard() -> None:
    src, _, _ = source(MAX_GATEWAYS=8, STATUS_GATEWAYS=3)
    try:
        for n in range(20):
            src.handle(pull_data(struct.pack(">Q", n)), float(n), 1.0)
        src.handle(pull_data(struct.pack(">Q", 15)), 99.0, 1.0)
    finally:
        src.stop()
    st = src.stats()
    assert st["gateways"] == [f"{15:016x}", f"{19:016x}", f"{18:016x}"]
    assert st["gateways_heard"] == 8 and st["gateways_evicted"] == 12


def test_a_vouched_forwarder_is_served_while_strangers_are_shed() -> None:
    src, got, counters = source()
    src._strangers = uf.TokenBucket(rate=0.0, burst=20.0)      # 20, then nothing
    eui = bytes.fromhex("0102030405060708")
    push = push_data(eui, [rxpk(GOOD, rssi_dbm=-90, lsnr_db=1.0, freq_mhz=868.1, sf=9)])
    src.start()
    legit = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    legit.settimeout(5.0)
    flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    flood.bind(("127.0.0.2", 0))
    rng = random.Random(5)
    try:
        legit.sendto(push, src.address)
        assert legit.recv(64)[3] == 1                 # PUSH_ACK: a stranger, in budget
        src.vouch(got[0].receiver)                     # the daemon: its frame verified
        src.vouch({"gateway_eui": "ffffffffffffffff"})  # never heard: nothing to trust
        assert src.stats()["trusted"] == 1
        for _ in range(300):
            flood.sendto(pull_data(random_eui(rng)), src.address)
        deadline = time.monotonic() + 20
        while src.datagrams < 301 and time.monotonic() < deadline:
            time.sleep(0.02)
        legit.sendto(push, src.address)
        assert legit.recv(64)[3] == 1                 # trusted: served during the flood
        assert len(got) == 2
        assert src.shed == 300 - 19 == counters.rejected(uf.PF_RATE)   # 1 + 19 in budget
    finally:
        legit.close()
        flood.close()
        src.stop()
