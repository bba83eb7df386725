"""`knute gateway tap` against a running gateway process: every frame's hex and what
became of it, and `knute decode --json` of that hex gives the gateway's MQTT reading.

A real `knute gateway run` with a serial source on a pty, real Mosquitto, the real
`knute` command for tap and decode.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

from knute.protocol import frame
from knute.tools.rig.ptys import Pty
from knute.tools.rig.wait import wait_for
from tests.conftest import Broker
from tests.gateway.test_daemon import KEY, KEY_HEX, WRONG_KEY, Gateway, rec, water

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "docs" / "schema"
                     / "reading.schema.json").read_text())


@pytest.fixture
def gateway(tmp_path: Path, mosquitto: Broker) -> Iterator[tuple[Gateway, Pty]]:
    """A running gateway (log level debug) and the pty of its "wired" serial source."""
    gw = Gateway(tmp_path, mosquitto.port)
    wired = Pty(tmp_path / "ttyWIRED")
    bridge = Pty(tmp_path / "ttyBRIDGE")
    try:
        gw.start()
        yield gw, wired
    finally:
        gw.close()
        wired.close()
        bridge.close()


class Tap:
    """`knute gateway tap ...` as a process; started() returns once it listens."""

    def __init__(self, knute_bin: Path, gw: Gateway, *args: str) -> None:
        self.proc = subprocess.Popen(
            [str(knute_bin), "gateway", "tap", "--socket", gw.status_socket, *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        ready, _, _ = select.select([self.proc.stderr], [], [], 30)
        assert ready, "tap did not connect"
        line = self.proc.stderr.readline()
        assert line.startswith("knute gateway tap: listening on "), line

    def finish(self) -> str:
        """Its whole output once it ended by itself (--count)."""
        out, err = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0, err
        return out

    def kill(self) -> None:
        """Gone without a word (SIGKILL)."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)


def _knute(knute_bin: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(knute_bin), *args], capture_output=True, text=True, timeout=60,
                          check=False)


def test_tap_shows_each_frame_and_decode_json_gives_the_mqtt_reading(
        gateway: tuple[Gateway, Pty], knute_bin: Path) -> None:
    gw, wired = gateway
    tap = Tap(knute_bin, gw, "--json", "--count", "3")
    good, forged, later = water(10), water(11, key=WRONG_KEY), water(12)
    for buf in (good, forged, later):
        wired.write(rec(buf))
    events: list[dict[str, Any]] = [json.loads(line) for line in tap.finish().splitlines()]
    by_hex = {e["hex"]: e for e in events}
    assert set(by_hex) == {good.hex(), forged.hex(), later.hex()}, events

    rejected = by_hex[forged.hex()]
    assert rejected["event"] == "rejected" and rejected["reason"] == "frame_tag"
    assert rejected["device"] == "00001234" and rejected["fcnt"] == 11
    assert rejected["source"] == "wired"

    for buf, fcnt in ((good, 10), (later, 12)):
        event = by_hex[buf.hex()]
        assert event["event"] == "accepted" and event["source"] == "wired"
        reading = event["reading"]
        jsonschema.validate(reading, SCHEMA)
        assert reading["id"] == f"00001234:{fcnt}"
        assert frame.decode(bytes.fromhex(event["hex"]), KEY)["fcnt"] == fcnt
        # The same hex through knute decode --json: the gateway's reading, bar what
        # only a gateway knows (who heard it, and which gateway published it).
        decoded = _knute(knute_bin, "decode", event["hex"], "--key", KEY_HEX, "--json",
                         "--received-at", reading["received_at"], "--source", "serial")
        assert decoded.returncode == 0, decoded.stderr
        mine = json.loads(decoded.stdout)
        jsonschema.validate(mine, SCHEMA)
        assert mine["receivers"] == [{"source": "knute-decode"}]
        for key in ("receivers", "gateway", "site"):
            mine.pop(key, None)
            reading.pop(key, None)
        assert mine == reading

    # At log level debug the gateway log shows every frame's hex too.
    wait_for(lambda: good.hex() in gw.log.read_text(), what="the frame's hex in the log")
    assert f"wired: frame {forged.hex()}: rejected frame_tag" in gw.log.read_text()


def test_tap_text_puts_the_hex_on_its_own_line(gateway: tuple[Gateway, Pty],
                                                knute_bin: Path) -> None:
    gw, wired = gateway
    tap = Tap(knute_bin, gw, "--count", "1")
    buf = water(20)
    wired.write(rec(buf))
    lines = tap.finish().splitlines()
    assert len(lines) == 2, lines
    assert " wired  accepted water_meter 00001234 fcnt 20: index 1020 L, battery 95 %" \
        in lines[0], lines[0]
    assert lines[1] == f"  frame {buf.hex()}"


def test_a_tap_client_that_vanishes_does_not_hold_up_the_gateway(
        gateway: tuple[Gateway, Pty], knute_bin: Path) -> None:
    gw, wired = gateway
    gone = Tap(knute_bin, gw, "--json")
    gone.kill()
    stalled = Tap(knute_bin, gw, "--json")
    os.kill(stalled.proc.pid, signal.SIGSTOP)        # connected, never reads again
    try:
        for fcnt in range(30, 330):
            wired.write(rec(water(fcnt)))
        wait_for(lambda: gw.status()["totals"]["accepted"] >= 300, timeout=60,
                 what="300 frames accepted")
        after = Tap(knute_bin, gw, "--json", "--count", "1")
        wired.write(rec(water(400)))
        assert json.loads(after.finish())["reading"]["fcnt"] == 400
    finally:
        os.kill(stalled.proc.pid, signal.SIGCONT)
        stalled.kill()


def test_tap_without_a_gateway_is_one_line(knute_bin: Path, tmp_path: Path) -> None:
    result = _knute(knute_bin, "gateway", "tap", "--socket", str(tmp_path / "none.sock"))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"knute gateway: no gateway answers on {tmp_path}")
    assert result.stderr.count("\n") == 1
