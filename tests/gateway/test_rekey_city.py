"""Key rotation with several gateways, each with its own registry (gateway.rekey_city).

The messages: sealed per pair of gateways, forged or altered ones refused. The
store's rotation states: a rekey waits for every peer, a refusal or an expiry
before it was sent drops the key everywhere, a commit at one gateway reaches the
others. And a model of the whole: three gateways (their real stores, downlink
services and rotation handlers; the broker an in-memory retained store plus the
notice queues of persistent sessions) and a node running firmware.downlink on
files, with power cuts at any write. Hypothesis interleaves rotations started at
any gateway, the peers' messages delivered late or again, uplinks heard by any
set of gateways, downlinks lost, gateway restarts and a week passing. After
every step: every gateway verifies the key the node seals its uplinks with,
every downlink the node gets verifies at the node, and no rekey leaves before
every gateway holds its key. At the end, with everything delivered, the node
and the gateways agree on the key.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware.downlink_model import Downlink
from firmware.state import Store
from knute.gateway import downlinks as dlq
from knute.gateway.config import MqttConfig
from knute.gateway.downlink_city import DownlinkCity
from knute.gateway.downlink_plan import PATH_SERIAL, Uplink, Window
from knute.gateway.downlink_service import DownlinkService
from knute.gateway.downlink_status import status_message
from knute.gateway.errors import KnuteError
from knute.gateway.model import Counters
from knute.gateway.registry import Registry
from knute.gateway.registry_share import fingerprint
from knute.gateway.rekey_city import RekeyCity, RekeyMessage, decode, encode, pair_key
from knute.protocol import downlink as pdl
from knute.protocol import frame
from knute.protocol.errors import FrameError
from tests.budget import examples

DEV = 0x1234
K1 = bytes(range(16))
NAMES = ("gw-a", "gw-b", "gw-c")
PRIV = {n: X25519PrivateKey.from_private_bytes(bytes([i + 1]) * 32)
        for i, n in enumerate(NAMES)}
PUB = {n: k.public_key() for n, k in PRIV.items()}


def _store(path: Path, name: str, peers: tuple[str, ...] = NAMES) -> dlq.DownlinkStore:
    reg = Registry(str(path))
    if reg.get(DEV) is None:
        reg.add(DEV, "water_meter", K1)
    reg.close()
    return dlq.DownlinkStore(str(path), stride=(NAMES.index(name), len(NAMES)),
                             gateway_id=name, peers=peers)


# -- the messages -----------------------------------------------------------------------

def _peers_of(name: str) -> dict[str, Any]:
    return {n: PUB[n] for n in NAMES if n != name}


def test_an_offer_opens_only_at_its_recipient_and_nothing_can_be_swapped() -> None:
    key = os.urandom(16)
    msg = RekeyMessage("offer", DEV, "gw-a", "gw-b", 1, fingerprint(key), fingerprint(K1),
                       "", key)
    raw = encode(msg, pair_key(PRIV["gw-a"], PUB["gw-b"], "gw-a", "gw-b"))
    assert key.hex() not in raw.decode()
    assert decode(raw, me="gw-b", private=PRIV["gw-b"], peers=_peers_of("gw-b")) == msg
    with pytest.raises(KnuteError, match="addressed to 'gw-b'"):
        decode(raw, me="gw-c", private=PRIV["gw-c"], peers=_peers_of("gw-c"))
    doc = json.loads(raw)
    for field, value in (("key_no", 2), ("fingerprint", "00" * 8), ("device", "00001235"),
                         ("what", "commit")):
        bad = json.dumps({**doc, field: value}).encode()
        with pytest.raises(KnuteError):
            decode(bad, me="gw-b", private=PRIV["gw-b"], peers=_peers_of("gw-b"))
    # gw-c cannot speak for gw-a: it does not have gw-a's private key.
    forged = encode(msg, pair_key(PRIV["gw-c"], PUB["gw-b"], "gw-a", "gw-b"))
    with pytest.raises(KnuteError, match="does not verify under gw-a's share key"):
        decode(forged, me="gw-b", private=PRIV["gw-b"], peers=_peers_of("gw-b"))
    # A gateway outside [share.peers] is not heard at all.
    with pytest.raises(KnuteError, match="not a gateway of"):
        decode(raw, me="gw-b", private=PRIV["gw-b"], peers={"gw-c": PUB["gw-c"]})


@pytest.mark.parametrize("payload", [b"", b"{}", b"[1]", b"\xff" * 10, b"{" * 5000,
                                     b'{"v": 1, "what": "offer", "to": "gw-b"}'])
def test_garbage_is_one_error(payload: bytes) -> None:
    with pytest.raises(KnuteError):
        decode(payload, me="gw-b", private=PRIV["gw-b"], peers=_peers_of("gw-b"))


# -- the store's rotation states -------------------------------------------------------

def test_the_rekey_waits_for_every_peer(tmp_path: Path) -> None:
    a = _store(tmp_path / "a.db", "gw-a")
    b = _store(tmp_path / "b.db", "gw-b")
    key = os.urandom(16)
    cmd = a.begin_rekey(DEV, key, ref="r1")
    assert cmd.args == {"key_no": 1}               # the key is never in a command's args
    assert a.due(DEV) == [] and a.next_keys() == {DEV: key}
    offers = {o.gateway: o for o in a.rekey_outbox()}
    assert set(offers) == {"gw-b", "gw-c"} and offers["gw-b"].key == key
    fp = fingerprint(key)
    assert b.rekey_offer(DEV, "gw-a", 1, key, fingerprint(K1)) == ("hold", "")
    assert b.next_keys() == {DEV: key}
    assert a.rekey_answer(DEV, "gw-b", "hold", 1, fp) == ("", None)
    assert a.due(DEV) == [] and a.rekey_peers(DEV) == {"gw-b": "held", "gw-c": "waiting"}
    assert a.rekey_answer(DEV, "gw-c", "hold", 1, "11" * 8) == ("", None)   # another key
    assert a.rekey_answer(DEV, "gw-c", "hold", 1, fp) == ("ready", None)
    assert [c.op for c in a.due(DEV)] == ["rekey"]
    assert a.rekey_key(DEV, 1) == key
    # gw-b hears the node under the new key first: it commits and tells the others.
    done = b.commit_rekey(DEV)
    assert done is not None and done.ref == f"rekey_done-{fp}"
    assert {(o.gateway, o.what) for o in b.rekey_outbox()} >= {("gw-a", "commit"),
                                                               ("gw-c", "commit")}
    applied = a.rekey_commit_notice(DEV, fp)
    assert [(c.op, c.state) for c in applied] == [("rekey", "applied")]
    assert a.device_key(DEV) == key and a.next_keys() == {} and a.due(DEV) == []
    assert a.rekey_commit_notice(DEV, fp) == []     # a repeat changes nothing
    # The retained offer read again later (a reconnection) is held, and changes nothing.
    assert b.rekey_offer(DEV, "gw-a", 1, key, fingerprint(K1)) == ("hold", "")
    assert b.next_keys() == {} and b.device_key(DEV) == key
    a.close()
    b.close()


def test_a_peer_refuses_another_key_and_a_second_rotation(tmp_path: Path) -> None:
    b = _store(tmp_path / "b.db", "gw-b")
    k2, k3 = os.urandom(16), os.urandom(16)
    assert b.rekey_offer(DEV, "gw-a", 1, k2, "22" * 8) == ("refuse", "other_key")
    assert b.next_keys() == {}
    assert b.rekey_offer(DEV, "gw-a", 1, k2, fingerprint(K1)) == ("hold", "")
    assert b.rekey_offer(DEV, "gw-c", 1, k3, fingerprint(K1)) == ("refuse", "busy")
    assert b.rekey_offer(0x9999, "gw-a", 1, k3, fingerprint(K1)) == ("refuse",
                                                                     "unknown_device")
    # Only the origin of the key may drop it.
    assert not b.rekey_abort(DEV, "gw-c", fingerprint(k2))
    assert b.rekey_abort(DEV, "gw-a", fingerprint(k2)) and b.next_keys() == {}
    b.close()


def test_a_refusal_drops_the_rotation_everywhere(tmp_path: Path) -> None:
    a = _store(tmp_path / "a.db", "gw-a")
    key = os.urandom(16)
    a.begin_rekey(DEV, key, ref="r1")
    a.rekey_answer(DEV, "gw-b", "hold", 1, fingerprint(key))
    event, cmd = a.rekey_answer(DEV, "gw-c", "refuse", 1, fingerprint(key), "busy")
    assert event == "refused" and cmd is not None
    assert (cmd.state, cmd.result, cmd.args["waiting_for"]) == ("rejected", "peer_refused",
                                                                ["gw-c"])
    doc = status_message(cmd, "gw-a", "water_meter")
    assert doc["result"] == "peer_refused" and doc["waiting_for"] == ["gw-c"]
    assert "key" not in json.dumps(doc["waiting_for"])
    assert a.next_keys() == {} and a.due(DEV) == []
    assert {(o.gateway, o.what) for o in a.rekey_outbox()} == {("gw-b", "abort"),
                                                               ("gw-c", "abort")}
    a.begin_rekey(DEV, os.urandom(16))             # a new rotation may start
    a.close()


def test_a_rekey_never_sent_expires_with_the_peers_missing(tmp_path: Path) -> None:
    a = _store(tmp_path / "a.db", "gw-a")
    key = os.urandom(16)
    cmd = a.begin_rekey(DEV, key, ref="r1", expiry_s=60.0)
    a.rekey_answer(DEV, "gw-b", "hold", 1, fingerprint(key))
    gone = a.expire(now=cmd.created_at + 61.0)
    assert [(c.op, c.state, c.result) for c in gone] == [("rekey", "expired", "peer_missing")]
    doc = status_message(gone[0], "gw-a", "water_meter")
    assert doc["result"] == "peer_missing" and doc["waiting_for"] == ["gw-c"]
    assert a.next_keys() == {}
    assert {o.what for o in a.rekey_outbox()} == {"abort"}
    a.close()


def test_a_rekey_sent_keeps_its_key_when_it_expires(tmp_path: Path) -> None:
    a = _store(tmp_path / "a.db", "gw-a", peers=("gw-a", "gw-b"))
    key = os.urandom(16)
    cmd = a.begin_rekey(DEV, key, expiry_s=60.0)
    a.rekey_answer(DEV, "gw-b", "hold", 1, fingerprint(key))
    a.mark_sent(DEV, [cmd.cmd_id], 0, 1)           # the node may hold the key now
    with pytest.raises(KnuteError):
        a.cancel(DEV, 0xFFFF)
    gone = a.expire(now=cmd.created_at + 61.0)
    assert [(c.state, c.result) for c in gone] == [("expired", None)]
    assert a.next_keys() == {DEV: key}             # an uplink under it still commits it
    assert {o.what for o in a.rekey_outbox()} == {"offer"}
    a.close()


def test_cancelling_a_waiting_rekey_ends_the_rotation(tmp_path: Path) -> None:
    a = _store(tmp_path / "a.db", "gw-a")
    cmd = a.begin_rekey(DEV, os.urandom(16))
    out = a.cancel(DEV, cmd.cmd_id)
    assert out.state == "cancelled" and a.next_keys() == {}
    assert {o.what for o in a.rekey_outbox()} == {"abort"}
    a.close()


# -- the model --------------------------------------------------------------------------

class PowerCut(Exception):
    """Raised inside a node write: its rename never happens."""


class Bus:
    """The broker: retained messages, and each gateway's persistent-session queue of the
    notices (``downlink/sent``, ``downlink/counter``) the others published."""

    def __init__(self) -> None:
        self.retained: dict[str, bytes] = {}
        self.notices: dict[str, list[tuple[str, bytes]]] = {n: [] for n in NAMES}

    def publish(self, sender: str, topic: str, payload: bytes, retain: bool) -> None:
        if retain:
            self.retained[topic] = payload
        if "/downlink/sent/" in topic or "/downlink/counter/" in topic:
            for name in NAMES:
                if name != sender:
                    self.notices[name].append((topic, payload))

    def rekey_topics(self, to: str) -> list[str]:
        return sorted(t for t in self.retained if "/downlink/rekey/" in t
                      and t.endswith("/" + to))


class BusClient:
    def __init__(self, bus: Bus, name: str) -> None:
        self.bus, self.name = bus, name

    def publish(self, topic: str, payload: Any, qos: int = 0,
                retain: bool = False) -> Delivered:
        data = payload if isinstance(payload, bytes) else str(payload).encode()
        self.bus.publish(self.name, topic, data, retain)
        return Delivered()


class Delivered:
    """What paho's ``publish`` returns, for a message the bus delivered at once."""

    def wait_for_publish(self, timeout: float | None = None) -> None:
        return None


class Gateway:
    """One gateway: its store, downlink worker and rotation handler; its radio a list."""

    def __init__(self, root: Path, name: str, bus: Bus) -> None:
        self.name, self.bus = name, bus
        self.path = root / f"{name}.db"
        reg = Registry(str(self.path))
        reg.add(DEV, "water_meter", K1)
        reg.close()
        self.lead = False
        self.frames: list[bytes] = []
        self.open()

    def open(self) -> None:
        self.store = dlq.DownlinkStore(str(self.path), dlq.DownlinkLimits(max_sends=100),
                                       (NAMES.index(self.name), len(NAMES)),
                                       gateway_id=self.name, peers=NAMES)
        self.city = DownlinkCity(MqttConfig(prefix="t"), self.store, gateway_id=self.name,
                                 index=NAMES.index(self.name), gather_s=0.0,
                                 client_id=self.name)
        self.city._client = BusClient(self.bus, self.name)   # type: ignore[assignment]
        self.city.connected = True
        self.city.elect = lambda *_a: self.lead               # type: ignore[method-assign]
        self.service = DownlinkService(self.store, {"radio": self}, Counters(),
                                       lambda _c, _k: None, city=self.city)
        self.city.rekey = RekeyCity(self.store, prefix="t", gateway_id=self.name,
                                    private=PRIV[self.name], peers=_peers_of(self.name),
                                    publish=self.city.publish_retained,
                                    on_status=self.service._status)
        self.city.rekey.connected_again()

    def restart(self) -> None:
        self.store.close()
        self.open()

    def held(self) -> set[bytes]:
        """The keys it verifies uplinks under: current and next."""
        key = self.store.device_key(DEV)
        assert key is not None
        return {key} | set(self.store.next_keys().values())

    def transmit_downlink(self, frame_: bytes, window: Window, up: Uplink,
                          done: Any) -> str | None:
        self.frames.append(frame_)
        return None

    def hear(self, raw: bytes, lead: bool) -> None:
        """The pipeline's verification (current, then next) and the downlink worker."""
        self.lead = lead
        current = self.store.device_key(DEV)
        nxt = self.store.next_keys().get(DEV)
        for key, under_next in ((current, False), (nxt, True)):
            if key is None:
                continue
            try:
                decoded = frame.decode(raw, key)
            except FrameError:
                continue
            up = Uplink(device_id=DEV, kind="water_meter", fcnt=decoded["fcnt"],
                        values=decoded["values"], end_s=time.time(), source="radio",
                        path=PATH_SERIAL, under_next_key=under_next)
            self.service.handle(up)
            return
        raise AssertionError(f"{self.name} cannot verify the node's uplink")


class Node:
    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "config.json").write_text(json.dumps(
            {"role": "water_meter", "device_id": DEV, "key": K1.hex(),
             "link": {"type": "uart"}}))
        self.cut_at = [0]
        self.fcnt = 0
        self.boot()

    def boot(self) -> None:
        def pause(_name: str) -> None:
            self.cut_at[0] -= 1
            if self.cut_at[0] == 0:
                raise PowerCut()

        self.dl = Downlink(Store(str(self.root / "state"), pause=pause), DEV,
                           str(self.root / "config.json"), lambda: 0, str(self.root / "upd"),
                           str(self.root / "lib"), pause)

    def uplink(self) -> bytes:
        self.fcnt += 1
        values: dict[str, Any] = {"index": 1000 + self.fcnt, "profile_end_h": 3,
                                  "battery": 19, "profile": [1]}
        report = self.dl.report()
        if report is not None:
            values["dl"] = report
        raw = frame.encode("water_meter", DEV, self.fcnt, values, self.dl.uplink_key())
        self.dl.uplink_sent(self.fcnt)
        self.dl.report_sent()
        return raw

    def receive(self, raw: bytes, cut: int) -> None:
        self.cut_at[0] = cut
        try:
            reason = self.dl.receive(raw)
            assert reason != "dl_forged", "a downlink the node cannot verify"
        except PowerCut:
            self.cut_at[0] = 0
            self.boot()
        self.cut_at[0] = 0


class City:
    def __init__(self, root: Path) -> None:
        self.bus = Bus()
        self.gws = {n: Gateway(root, n, self.bus) for n in NAMES}
        self.node = Node(root)
        self.rotations = 0

    def check(self) -> None:
        key = self.node.dl.uplink_key()
        for gw in self.gws.values():
            assert key in gw.held(), f"{gw.name} lost the node's key"

    def deliver_rekey(self, to: str, pick: int) -> None:
        topics = self.bus.rekey_topics(to)
        if topics:
            topic = topics[pick % len(topics)]
            gw = self.gws[to]
            assert gw.city.rekey is not None
            gw.city.rekey.handle(topic, self.bus.retained[topic])

    def deliver_notice(self, to: str) -> None:
        if self.bus.notices[to]:
            topic, payload = self.bus.notices[to].pop(0)
            self.gws[to].city.handle(topic, payload)

    def uplink(self, heard: list[str], leader: str, lost: bool, cut: int) -> None:
        raw = self.node.uplink()
        for name in heard:
            self.gws[name].hear(raw, name == leader)
        for gw in self.gws.values():
            frames, gw.frames = gw.frames, []
            for sent in frames:
                self._rekey_only_when_all_hold(gw, sent)
                if not lost:
                    self.node.receive(sent, cut)

    def _rekey_only_when_all_hold(self, gw: Gateway, sent: bytes) -> None:
        for key in gw.held():
            try:
                cmds = pdl.decode(sent, key)["commands"]
            except FrameError:
                continue
            for cmd in cmds:
                if cmd[1] == pdl.OP_REKEY:
                    for other in self.gws.values():
                        assert cmd[3] in other.held(), f"rekey sent before {other.name} " \
                                                       "held the key"
            return

    def settle(self) -> None:
        """Everything delivered, the node heard by all; the gateway with commands due
        answers (as the claims rank it)."""
        for _ in range(10):
            for gw in self.gws.values():
                assert gw.city.rekey is not None
                gw.city.rekey.connected_again()
                gw.city.rekey.pump()
            for _ in range(3):
                for name in NAMES:
                    for pick in range(len(self.bus.rekey_topics(name))):
                        self.deliver_rekey(name, pick)
                    while self.bus.notices[name]:
                        self.deliver_notice(name)
                for gw in self.gws.values():
                    assert gw.city.rekey is not None
                    gw.city.rekey.pump()
            leader = next((n for n in NAMES if self.gws[n].service._sealable(
                DEV, self.gws[n].store.due(DEV))), "gw-a")
            self.gws[leader].store.queue(DEV, "time")   # a downlink, whatever is pending
            self.uplink(list(NAMES), leader, False, 0)
            self.check()


# Weighted by repetition: uplinks and message deliveries are what moves a rotation on.
ACTIONS = st.tuples(
    st.sampled_from(["start", "start", "rekey_msg", "rekey_all", "rekey_all", "notice",
                     "uplink", "uplink", "uplink", "restart", "week"]),
    st.sampled_from(NAMES), st.integers(0, 63))


# 80 examples: each runs up to 30 steps over three registries and a node on files; the
# nightly run looks further.
@settings(max_examples=examples(ci=80, nightly=800), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(ACTIONS, min_size=4, max_size=30))
def test_no_party_is_ever_left_with_a_key_the_other_cannot_verify(
        steps: list[tuple[str, str, int]]) -> None:
    # In memory when the host has it: a gateway restart here is a process restart (kill -9
    # keeps what SQLite wrote), not a power cut of the disk, so fsync costs only time.
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(dir=shm) as tmp:
        city = City(Path(tmp))
        try:
            for what, name, n in steps:
                gw = city.gws[name]
                if what == "start" and city.rotations < 2:
                    try:
                        gw.store.begin_rekey(DEV, os.urandom(16), ref=f"r{city.rotations}")
                        city.rotations += 1
                    except KnuteError:
                        pass                    # one rotation pending at that gateway
                elif what == "rekey_msg":
                    city.deliver_rekey(name, n % 6)
                elif what == "rekey_all":         # every retained word, to everyone
                    for to in NAMES[n % 3:] + NAMES[:n % 3]:
                        for pick in range(len(city.bus.rekey_topics(to))):
                            city.deliver_rekey(to, pick)
                elif what == "notice":
                    city.deliver_notice(name)
                elif what == "uplink":
                    # n: which gateways hear it (bits 0-2; none heard is a lost uplink),
                    # whether the downlink is lost (bit 3), a power cut at the node's
                    # n-th write while it applies it (bits 4-5).
                    heard = [g for i, g in enumerate(NAMES) if n >> i & 1]
                    city.uplink(heard, name, bool(n >> 3 & 1), n >> 4)
                elif what == "restart":
                    gw.restart()
                elif what == "week":
                    gw.store.expire(now=time.time() + 8 * 86400)
                for each in city.gws.values():      # the pump threads publish the outbox
                    assert each.city.rekey is not None
                    each.city.rekey.pump()
                city.check()
            city.settle()
            node_key = city.node.dl.key
            assert city.node.dl.key_next is None
            for gw in city.gws.values():
                assert gw.store.device_key(DEV) == node_key, gw.name
        finally:
            for gw in city.gws.values():
                gw.store.close()


def _pump_all(city: City) -> None:
    for gw in city.gws.values():
        assert gw.city.rekey is not None
        gw.city.rekey.pump()


def _deliver_all(city: City) -> None:
    for _ in range(2):
        _pump_all(city)
        for to in NAMES:
            for pick in range(len(city.bus.rekey_topics(to))):
                city.deliver_rekey(to, pick)
    _pump_all(city)


def test_a_rekey_that_reached_the_node_is_kept_past_its_expiry(tmp_path: Path) -> None:
    city = City(tmp_path)
    try:
        a = city.gws["gw-a"]
        a.store.begin_rekey(DEV, os.urandom(16), ref="r")
        city.uplink(list(NAMES), "gw-a", False, 0)     # peers not asked yet: no rekey
        assert city.node.dl.key_next is None
        _deliver_all(city)
        city.uplink(["gw-a"], "gw-a", False, 0)        # the rekey goes out
        assert city.node.dl.key_next is not None
        a.store.expire(now=time.time() + 8 * 86400)   # a week without hearing the node
        _deliver_all(city)
        city.check()
        city.uplink(["gw-b"], "gw-b", False, 0)        # B hears it under the new key
        assert city.gws["gw-b"].store.device_key(DEV) == city.node.dl.key_next
        _deliver_all(city)                             # B's commit reaches A and C
        for gw in city.gws.values():
            assert gw.store.next_keys() == {} and gw.store.device_key(DEV) != K1
        city.settle()
        assert city.node.dl.key != K1 and city.node.dl.key_next is None
    finally:
        for gw in city.gws.values():
            gw.store.close()


def test_a_peer_that_is_down_keeps_the_rekey_back_until_it_expires(tmp_path: Path) -> None:
    city = City(tmp_path)
    try:
        a, b, c = (city.gws[n] for n in NAMES)
        cmd = a.store.begin_rekey(DEV, os.urandom(16), ref="r")
        _pump_all(city)
        for pick in range(len(city.bus.rekey_topics("gw-b"))):
            city.deliver_rekey("gw-b", pick)          # gw-c is down: it hears nothing
        _pump_all(city)
        for pick in range(len(city.bus.rekey_topics("gw-a"))):
            city.deliver_rekey("gw-a", pick)
        assert a.store.rekey_peers(DEV) == {"gw-b": "held", "gw-c": "waiting"}
        for _ in range(3):
            city.uplink(["gw-a", "gw-b"], "gw-a", False, 0)
        assert city.node.dl.key_next is None and a.store.due(DEV) == []
        gone = a.store.expire(now=cmd.expires_at + 1)
        assert [(g.op, g.result) for g in gone if g.op == "rekey"] == [("rekey",
                                                                        "peer_missing")]
        _deliver_all(city)                             # the abort reaches B (and C later)
        assert b.store.next_keys() == {} and c.store.next_keys() == {}
        assert a.store.next_keys() == {}
        city.settle()
        assert all(gw.store.device_key(DEV) == K1 for gw in city.gws.values())
    finally:
        for gw in city.gws.values():
            gw.store.close()


def test_the_operators_share_does_not_bring_a_rotated_key_back(tmp_path: Path) -> None:
    # The operator's registry never learns the new key (it stays at the gateways): a later
    # share of the device, with a new name, must not take the gateway back to the old key.
    from knute.gateway.registry_share import put_message
    from knute.gateway.share_apply import ShareState

    private = PRIV["gw-b"]
    reg = Registry(str(tmp_path / "b.db"))
    state = ShareState(private, prefix="t", gateway_id="gw-b")

    def put(name: str, version: int) -> None:
        state.offer(f"t/registry/gw-b/{DEV:08x}", put_message(
            gateway_id="gw-b", recipient=PUB["gw-b"], device_id=DEV, kind="water_meter",
            key=K1, name=name, site="", location={}, version=version))

    try:
        put("meter", 1)
        assert state.apply(reg)
        store = dlq.DownlinkStore(str(tmp_path / "b.db"), stride=(1, 3), gateway_id="gw-b",
                                  peers=NAMES)
        new = os.urandom(16)
        assert store.rekey_offer(DEV, "gw-a", 1, new, fingerprint(K1)) == ("hold", "")
        store.rekey_commit_notice(DEV, fingerprint(new))
        store.close()
        put("meter, Storgata 1", 2)
        assert state.apply(reg)
        dev = reg.get(DEV)
        assert dev is not None and dev.key == new and dev.name == "meter, Storgata 1"
        assert state.counts["kept_rotated_key"] == 1
    finally:
        reg.close()


def test_an_mqtt_rekey_is_started_by_one_gateway_only(tmp_path: Path) -> None:
    from knute.gateway.downlink_mqtt import CommandListener, parse_command

    topic = f"t/water_meter/{DEV:08x}/down"
    started: dict[str, list[str]] = {}
    for name in NAMES:
        store = _store(tmp_path / f"{name}.db", name)
        listener = CommandListener(MqttConfig(prefix="t"), store, lambda _d: "water_meter",
                                   lambda c, _k: None, lambda *_a: None, gateway_id=name,
                                   client_id=name)
        listener.handle(topic, b'{"id": "r1", "command": "rekey"}')
        listener.handle(topic, b'{"id": "r2", "command": "rekey", "gateway": "gw-c"}')
        started[name] = [c.ref or "" for c in store.commands(DEV) if c.op == "rekey"]
        assert listener.stats()["rekey_elsewhere"] == 2 - len(started[name])
        store.close()
    # Without a name the gateway of index 0 starts it; gw-c's own rotation waits for
    # nothing else: a second rotation at gw-a would be refused as pending anyway.
    assert started == {"gw-a": ["r1"], "gw-b": [], "gw-c": ["r2"]}
    with pytest.raises(KnuteError, match="time takes no 'gateway'"):
        parse_command(b'{"id": "x", "command": "time", "gateway": "gw-a"}')


def test_the_peers_come_from_the_share_table(tmp_path: Path) -> None:
    from knute.gateway import config

    pub = PUB["gw-b"].public_bytes_raw().hex()
    (tmp_path / "c.pub").write_text(PUB["gw-c"].public_bytes_raw().hex() + "\n")
    base = {"gateway": {"id": "gw-a", "data_dir": str(tmp_path)},
            "serial": [{"name": "s", "url": "/dev/null"}],
            "downlinks": {"gateways": 3}}
    cfg = config.parse({**base, "share": {"peers": {"gw-b": pub, "gw-c": "@c.pub"}}})
    assert cfg.share_peers == (("gw-b", pub), ("gw-c", PUB["gw-c"].public_bytes_raw().hex()))
    for peers, problem in (({"gw-b": "abc"}, r"share.peers.gw-b: must be the gateway's "
                                             r"public share key"),
                           ({"gw-a": pub}, "names this gateway"),
                           ({"gw-b": 5}, "must be a string"),
                           ({"gw-b": "@missing.pub"}, "missing.pub")):
        with pytest.raises(KnuteError, match=problem):
            config.parse({**base, "share": {"peers": peers}})


def test_old_words_leave_the_outbox_and_a_start_publishes_the_rest_once(
        tmp_path: Path) -> None:
    a = _store(tmp_path / "a.db", "gw-a")
    published: list[str] = []
    key = os.urandom(16)
    a.begin_rekey(DEV, key)
    city = RekeyCity(a, prefix="t", gateway_id="gw-a", private=PRIV["gw-a"],
                     peers=_peers_of("gw-a"), publish=lambda t, _p: published.append(t),
                     on_status=lambda _c: None)
    assert city.pump() == 0                      # not connected yet
    city.connected_again()
    assert city.pump() == 2 and city.pump() == 0
    city.disconnected()
    city.connected_again()
    assert city.pump() == 0                      # a reconnection publishes nothing again
    a.rekey_answer(DEV, "gw-b", "hold", 1, fingerprint(key))
    a.rekey_answer(DEV, "gw-c", "hold", 1, fingerprint(key))
    a.commit_rekey(DEV)
    assert city.pump() == 2                      # the commits replace the offers
    assert published[-1] == "t/downlink/rekey/00001234/gw-a/gw-c"
    a.expire(now=time.time() + 31 * 86400)
    assert a.rekey_outbox() == []
    a.close()
