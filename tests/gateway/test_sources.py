"""Sources: packet-forwarder datagrams checked field by field; serial links on ptys."""

from __future__ import annotations

import base64
import queue
import random
from pathlib import Path
from typing import Any

import pytest

from knute.gateway.config import SerialSourceConfig, UdpSourceConfig
from knute.gateway.pipeline import Reception
from knute.gateway.sources import udp_forwarder as uf
from knute.gateway.sources.base import Backoff, LinkState
from knute.gateway.sources.serial import RecordReader, SerialSource
from knute.gateway.status import Counters
from knute.protocol import frame, stream
from knute.protocol.errors import FrameError
from knute.tools.rig.ptys import Pty
from knute.tools.rig.wait import wait_for
from tests.gateway.pf_client import PacketForwarder, push_data, rxpk

KEY = bytes(range(16))
FRAME = frame.encode("water_meter", 0x1234, 1,
                     {"index": 5, "profile_end_h": 1, "battery": 20, "profile": [1]}, KEY)
EUI = bytes.fromhex("0102030405060708")


# -------------------------------------------------------------- packet forwarder, pure

def handle(datagrams: list[bytes], **cfg: Any) -> tuple[list[Reception], Counters, list[bytes]]:
    got: list[Reception] = []
    counters = Counters()
    source = uf.UdpForwarderSource(UdpSourceConfig(name="pf", host="127.0.0.1", port=0, **cfg),
                                   got.append, counters)
    replies: list[bytes] = []
    try:
        for d in datagrams:
            replies.extend(source.handle(d, 1.0, 1.0))
    finally:
        source.stop()
    return got, counters, replies


def test_push_data_gives_receptions_with_radio_metadata() -> None:
    token, dgram = push_data(EUI, {"rxpk": [rxpk(FRAME), rxpk(FRAME, rssi=-120, chan=5)],
                                   "stat": {"rxnb": 2}})
    got, counters, replies = handle([dgram])
    assert replies == [bytes([2]) + token.to_bytes(2, "big") + b"\x01"]
    assert [r.frame for r in got] == [FRAME, FRAME]
    assert got[0].source_type == "radio"
    assert got[0].receiver == {
        "source": "pf", "gateway_eui": EUI.hex(), "rssi_dbm": -97, "snr_db": 6.5,
        "freq_hz": 868_100_000, "datr": "SF9BW125", "sf": 9, "chan": 2, "tmst": 3512348611,
        "time": "2024-05-01T12:00:00.000000Z"}
    assert got[1].receiver["rssi_dbm"] == -120 and got[1].receiver["chan"] == 5
    assert counters.get("received") == 2 and counters.get("pf_stat") == 1


def test_pull_data_is_acknowledged() -> None:
    dgram = bytes([2, 0xAB, 0xCD, 2]) + EUI
    _, _, replies = handle([dgram])
    assert replies == [bytes([2, 0xAB, 0xCD, 4])]


@pytest.mark.parametrize("datagram, reason", [
    (b"\x02\x00", "pf_short"),
    (bytes([1, 0, 1, 0]) + EUI + b"{}", "pf_version"),
    (bytes([2, 0, 1, 9]) + EUI, "pf_type"),
    (bytes([2, 0, 1, 1]), "pf_type"),                  # a PUSH_ACK sent to the server
    (bytes([2, 0, 1, 0]) + EUI[:3], "pf_short"),
    (push_data(EUI, b"{not json")[1], "pf_json"),
    (push_data(EUI, b"[1, 2]")[1], "pf_json"),
    (push_data(EUI, b"[" * 100000 + b"]" * 100000)[1], "oversize"),
    (push_data(EUI, {"rxpk": {"data": "x"}})[1], "pf_json"),
    (push_data(EUI, {"rxpk": [rxpk(FRAME, stat=-1)]})[1], "pf_crc"),
    (push_data(EUI, {"rxpk": [rxpk(FRAME, stat=0)]})[1], "pf_crc"),
    (push_data(EUI, {"rxpk": [rxpk(FRAME, stat=True)]})[1], "pf_field"),
    (push_data(EUI, {"rxpk": [rxpk(FRAME, size=3)]})[1], "pf_size"),
    (push_data(EUI, {"rxpk": [rxpk(FRAME, data="!!notbase64")]})[1], "pf_base64"),
    (push_data(EUI, {"rxpk": [rxpk(FRAME, data=5)]})[1], "pf_field"),
    (push_data(EUI, {"rxpk": [rxpk(FRAME, rssi="loud")]})[1], "pf_field"),
    (push_data(EUI, {"rxpk": [rxpk(FRAME, lsnr=99.0)]})[1], "pf_field"),
    (push_data(EUI, {"rxpk": [rxpk(FRAME, datr="SF99")]})[1], "pf_field"),
    (push_data(EUI, {"rxpk": [rxpk(FRAME, tmst=-1)]})[1], "pf_field"),
    (push_data(EUI, {"rxpk": ["packet"]})[1], "pf_field"),
    (push_data(EUI, {"rxpk": [rxpk(bytes(300))]})[1], "oversize"),
])
def test_bad_datagrams_counted_by_reason(datagram: bytes, reason: str) -> None:
    got, counters, _ = handle([datagram])
    assert got == []
    assert counters.snapshot()["rejected"] == {reason: 1}


def test_gateway_allow_list() -> None:
    other = bytes.fromhex("ffffffffffffffff")
    got, counters, replies = handle([push_data(other, {"rxpk": [rxpk(FRAME)]})[1],
                                     push_data(EUI, {"rxpk": [rxpk(FRAME)]})[1]],
                                    gateways=(EUI.hex(),))
    assert len(got) == 1 and len(replies) == 1
    assert counters.rejected("pf_gateway") == 1


def test_random_datagrams_never_raise() -> None:
    rng = random.Random(7)
    good = push_data(EUI, {"rxpk": [rxpk(FRAME)]})[1]
    samples = [rng.randbytes(rng.randrange(0, 80)) for _ in range(300)]
    for _ in range(300):
        b = bytearray(good)
        for _ in range(rng.randrange(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        samples.append(bytes(b))
    got, counters, _ = handle(samples)
    snap = counters.snapshot()
    assert snap["totals"]["datagrams"] == 600
    for r in got:
        assert len(r.frame) <= frame.MAX_FRAME


def test_udp_listener_end_to_end() -> None:
    got: queue.Queue[Reception] = queue.Queue()
    counters = Counters()
    source = uf.UdpForwarderSource(UdpSourceConfig(name="pf", host="127.0.0.1", port=0),
                                   got.put, counters)
    source.start()
    client = PacketForwarder(*source.address, eui=EUI)
    try:
        client.pull()
        client.push(rxpk(FRAME))
        assert got.get(timeout=5).frame == FRAME
        assert source.stats()["gateways"] == [EUI.hex()]
    finally:
        client.close()
        source.stop()
    assert source.state is LinkState.STOPPED


# -------------------------------------------------------------- serial

def test_record_reader_resyncs_after_garbage() -> None:
    counters = Counters()
    reader = RecordReader("s", counters)
    radio = stream.encode_record(stream.REC_RADIO,
                                 stream.pack_radio(-91, 72, 868_300_000, 10, FRAME))
    data = (b"\x13\x37garbage\x00" + stream.encode_record(stream.REC_FRAME, FRAME)
            + stream.encode_record(stream.REC_FRAME, FRAME)[:-9] + radio
            + stream.encode_record(stream.REC_LOG, b"boot ok") + b"\xff" * 400 + b"\x00"
            + stream.encode_record(stream.REC_RADIO, b"\x01\x02"))
    got: list[Reception] = []
    for i in range(0, len(data), 7):          # a byte stream arrives in pieces
        got.extend(reader.feed(data[i:i + 7], 1.0, 1.0))
    assert [(r.source_type, r.frame) for r in got] == [("serial", FRAME), ("radio", FRAME)]
    assert got[1].receiver == {"source": "s", "rssi_dbm": -91, "snr_db": 7.2,
                               "freq_hz": 868_300_000, "sf": 10}
    snap = counters.snapshot()
    assert snap["rejected"] == {"link_cobs": 2, "link_oversize": 1, "link_radio": 1}
    assert snap["totals"]["log_records"] == 1


def test_backoff_is_capped_and_jittered() -> None:
    b = Backoff(0.5, 4.0, random.Random(1))
    delays = [b.next() for _ in range(10)]
    assert all(0.25 <= d <= 4.0 for d in delays)
    assert max(delays[5:]) > 2.0 and len(set(delays)) == 10
    b.reset()
    assert b.next() <= 0.5


def test_serial_source_survives_unplug_and_replug(tmp_path: Path) -> None:
    link = tmp_path / "ttyRADIO"
    got: queue.Queue[Reception] = queue.Queue()
    counters = Counters()
    cfg = SerialSourceConfig(name="bridge", url=str(link), reopen_min_s=0.05,
                             reopen_max_s=0.2)
    source = SerialSource(cfg, got.put, counters)
    source.start()                       # the device is not there yet
    try:
        wait_for(lambda: source.state is LinkState.BACKOFF)
        radio = Pty(link)
        wait_for(lambda: source.state is LinkState.OPEN)
        radio.write(b"noise" + stream.encode_record(stream.REC_FRAME, FRAME))
        assert got.get(timeout=5).frame == FRAME
        radio.unplug()
        wait_for(lambda: source.losses == 1)
        wait_for(lambda: source.state is LinkState.BACKOFF)
        radio.plug()                     # plugged in again, maybe another tty number
        wait_for(lambda: source.state is LinkState.OPEN)
        radio.write(stream.encode_record(stream.REC_FRAME, FRAME))
        assert got.get(timeout=5).frame == FRAME
        assert source.opens == 2
        radio.close()
    finally:
        source.stop()
    assert source.state is LinkState.STOPPED


def test_serial_source_over_socket_url() -> None:
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    got: queue.Queue[Reception] = queue.Queue()
    source = SerialSource(SerialSourceConfig(name="sim", url=f"socket://127.0.0.1:{port}"),
                          got.put, Counters())
    source.start()
    conn, _ = server.accept()
    try:
        # pyserial flushes input when it opens a port: send once it is open.
        wait_for(lambda: source.state is LinkState.OPEN)
        conn.sendall(stream.encode_record(stream.REC_FRAME, FRAME))
        assert got.get(timeout=5).frame == FRAME
    finally:
        conn.close()
        server.close()
        source.stop()


def test_unused_helpers_are_consistent() -> None:
    with pytest.raises(FrameError):
        uf.parse_datagram(b"")
    assert base64.b64decode(rxpk(FRAME)["data"]) == FRAME
