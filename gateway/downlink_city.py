"""Downlinks with several gateways, each with its own registry (docs/operations.md,
"Several gateways: downlinks").

Gateways that share devices over the broker (``[share]``) each keep their own
downlink store, so the database claim that lets gateways on ONE registry agree
cannot work between them. Three rules take its place:

1. Counters disjoint by construction. Gateway ``index`` of ``gateways`` takes
   only downlink counters with ``dcnt % gateways == index`` (and command ids
   with ``(id - 1) % gateways == index``): two gateways can never seal two
   downlinks under one counter, whatever messages are lost. Each takes the next
   such value above the highest counter it knows was used for the device, its
   own or one it learned, because the node accepts only increasing counters.
2. One answer per uplink. A gateway that has something to do for an uplink (a
   command open, a report or a flag in it) publishes a claim on
   ``<prefix>/downlink/claim/<device>`` (its SNR and whether it has commands
   due), waits ``gather_ms`` after it published the claim (or until it holds a
   claim from every index of ``gateways``: no claim can come that would change
   the decision), and answers only when its claim ranks first of the claims
   that count: commands due first, then the best SNR, then the lowest index.
   The others apply the report silently.
   A claim counts when it was published within half of ``gather_ms`` of the
   first claim for the uplink (``on_time``). So when a claim reaches every
   other gateway within half of ``gather_ms`` and the gateways' clocks agree,
   all of them decide on the same claims, however late each got to the uplink:
   two claims published close together are both heard by both, and of two far
   apart the later one is out wherever it is heard. Waiting from the uplink
   instead let two gateways that both got to it late (a loaded box) decide at
   once, each on its own claim alone, and both answer.
3. What was sent is told. The answering gateway publishes each downlink it
   sends on ``<prefix>/downlink/sent/<device>`` (the counter, the uplink and
   the commands with their refs and ids) and the counter, retained, on
   ``<prefix>/downlink/counter/<device>/<gateway>``. The others raise their
   counter above it and record the commands as sent under the sender's ids
   (``DownlinkStore.adopt``), so none sends them again, and whichever gateway
   answers the next uplink reads their report and publishes the progress: each
   ``sent``, ``applied`` or ``rejected`` reaches the backend once. It also
   tells, on the same topic, which commands a report closed, so a gateway that
   was away closes its copies when it catches up and never sends them again.

A gateway that cannot reach the broker answers alone (counted as
``downlink_alone``): its counters stay disjoint, but a peer in the same state
may answer the same uplink.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt

from knute.gateway.config import MqttConfig
from knute.gateway.downlink_commands import APPLIED, REJECTED, Command
from knute.gateway.downlink_mqtt import SessionChannel
from knute.gateway.downlinks import DownlinkStore
from knute.gateway.logsafe import clean

if TYPE_CHECKING:
    from knute.gateway.rekey_city import RekeyCity

log = logging.getLogger("knute.downlinks.city")

CLAIM_TTL_S = 30.0       # claims and notices older than this are forgotten
NOTICE_ACK_S = 0.5       # how long a downlink waits for the broker to hold its notice
MAX_MESSAGE = 16384

Rank = tuple[bool, float, int, str]


def rank(due: bool, snr_db: float | None, index: int, gateway: str) -> Rank:
    """A claim's place: commands due first, then the best SNR, then the lowest index."""
    return (due, -1e9 if snr_db is None else float(snr_db), -index, gateway)


def winner(claims: dict[str, Rank]) -> str:
    """The gateway whose claim ranks first (``claims``: gateway id -> rank)."""
    return max(claims.items(), key=lambda item: item[1])[0]


def on_time(claims: dict[str, Rank], published: dict[str, float],
            gather_s: float) -> dict[str, Rank]:
    """The claims that count (``published``: gateway id -> when its claim was published,
    unix s): those published within ``gather_s / 2`` of the first one."""
    if not published:
        return dict(claims)
    first = min(published.values())
    return {g: r for g, r in claims.items() if published.get(g, first) <= first + gather_s / 2}


def command_ref(cmd: Command, gateway_id: str) -> str:
    """The reference a command travels under between gateways: the caller's ``id``, or
    for a command without one (the CLI, the clock flag) one made from the queuing gateway
    and the command, the same each time that gateway sends it."""
    if cmd.ref is not None:
        return cmd.ref
    return f"{gateway_id}/{cmd.cmd_id}/{cmd.created_at:.6f}"


class DownlinkCity(SessionChannel):
    """The claims and notices of one gateway, on a client of its own."""

    def __init__(self, cfg: MqttConfig, store: DownlinkStore, *, gateway_id: str,
                 index: int, gather_s: float, client_id: str,
                 count: Callable[[str], None] | None = None,
                 gateways: int | None = None) -> None:
        super().__init__(cfg, f"{client_id}-city", session_s=86400, channel_log=log,
                         name="downlink claims")
        self.store = store
        self.gateway_id = gateway_id
        self.index = index
        self.gather_s = gather_s
        # ``[downlinks] gateways``: an election with a claim from each of its indexes
        # decides at once (None: always wait the whole gather time).
        self.gateways = gateways
        self.prefix = cfg.prefix
        self._count = count or (lambda _name: None)
        self._lock = threading.Lock()
        self._claim_heard = threading.Condition(self._lock)   # an election waits on it
        self._claims: dict[tuple[int, int], dict[str, tuple[Rank, float]]] = {}
        self._published: dict[tuple[int, int], dict[str, float]] = {}   # claims' own "at"
        self._answered: dict[tuple[int, int], tuple[str, float]] = {}
        self.figures = {"claims_sent": 0, "claims_heard": 0, "won": 0, "lost": 0,
                        "alone": 0, "all_claimed": 0, "notices_heard": 0, "adopted": 0,
                        "closed": 0, "counters_learned": 0, "bad_messages": 0}
        self.rekey: RekeyCity | None = None     # key rotations (gateway.rekey_city)
        # The data-rate rule's history takes every claim's SNR, also one heard late.
        self.on_claim: Callable[[int, int, float], object] | None = None

    # -- the connection ------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background (paho reconnects by itself)."""
        if self.rekey is not None:
            self.rekey.start()
        super().start()

    def stop(self) -> None:
        """Disconnect and stop the network thread."""
        if self.rekey is not None:
            self.rekey.stop()
        super().stop()

    def publish_retained(self, topic: str, payload: bytes) -> None:
        """One retained QoS 1 message on the city channel (the key rotations' outbox)."""
        self._client.publish(topic, payload, qos=1, retain=True)

    def _subscribe(self, client: mqtt.Client) -> None:
        topics = [(f"{self.prefix}/downlink/claim/+", 1), (f"{self.prefix}/downlink/sent/+", 1),
                  (f"{self.prefix}/downlink/counter/+/+", 1)]
        if self.rekey is not None:
            topics.append((self.rekey.topic_filter(), 1))
            self.rekey.connected_again()
        client.subscribe(topics)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any = None) -> None:
        super()._on_disconnect(client, userdata, flags, reason, properties)
        if self.rekey is not None:
            self.rekey.disconnected()

    # -- what the others say -------------------------------------------------------

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: Any) -> None:
        try:
            self.handle(msg.topic, bytes(msg.payload))
        except Exception as exc:  # a bad message never stops the network thread
            self.figures["bad_messages"] += 1
            log.warning("downlink claims: message on %s ignored: %s", clean(msg.topic),
                        clean(str(exc)))

    def handle(self, topic: str, payload: bytes) -> None:
        """One claim, notice or counter from another gateway."""
        if self.rekey is not None and self.rekey.owns(topic):
            self.rekey.handle(topic, payload)
            return
        if len(payload) > MAX_MESSAGE:
            raise ValueError(f"longer than {MAX_MESSAGE} bytes")
        parts = topic.split("/")
        what = parts[-2] if parts[-2] in ("claim", "sent") else parts[-3]
        if not payload:
            return                          # a cleared retained counter
        doc = json.loads(payload)
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        gateway = str(doc["gateway"])
        if gateway == self.gateway_id:
            return
        device = int(doc["device"], 16)
        now = time.time()
        if what == "counter":
            if self.store.learn_counter(device, int(doc["dcnt"])):
                self.figures["counters_learned"] += 1
            return
        fcnt = int(doc["fcnt"])
        at = float(doc.get("at") or now)
        stale = now - at > CLAIM_TTL_S      # from a session's backlog: long decided
        if what == "claim":
            if stale:
                return
            snr = doc.get("snr_db")
            mark = rank(bool(doc["due"]), None if snr is None else float(snr),
                        int(doc["index"]), gateway)
            with self._lock:
                self._prune(now)
                self._claims.setdefault((device, fcnt), {})[gateway] = (mark, now)
                self._published.setdefault((device, fcnt), {})[gateway] = at
                self._claim_heard.notify_all()
            self.figures["claims_heard"] += 1
            if self.on_claim is not None and snr is not None:
                self.on_claim(device, fcnt, float(snr))
            return
        if what == "sent":
            self.figures["notices_heard"] += 1
            closed = doc.get("closed")
            if isinstance(closed, list) and closed:
                self.figures["closed"] += self.store.close_reported(
                    device, [c for c in closed if isinstance(c, dict)])
            if doc.get("dcnt") is None:
                return                      # a report read, no downlink
            dcnt = int(doc["dcnt"])
            if not stale:
                with self._lock:
                    self._prune(now)
                    self._answered[(device, fcnt)] = (gateway, now)
            if self.store.learn_counter(device, dcnt):
                self.figures["counters_learned"] += 1
            cmds = doc.get("commands")
            if isinstance(cmds, list) and cmds:
                self.figures["adopted"] += self.store.adopt(
                    device, [c for c in cmds if isinstance(c, dict)], dcnt, fcnt)

    def _prune(self, now: float) -> None:
        cut = now - CLAIM_TTL_S
        for key in [k for k, v in self._claims.items()
                    if max(at for _r, at in v.values()) < cut]:
            del self._claims[key]
            self._published.pop(key, None)
        for key in [k for k, (_g, at) in self._answered.items() if at < cut]:
            del self._answered[key]

    # -- this gateway's side --------------------------------------------------------

    def elect(self, device_id: int, fcnt: int, snr_db: float | None, due: bool,
              heard_s: float | None) -> bool:
        """Claim the uplink, wait until ``gather_s`` after the claim went out (or after
        the uplink was heard, ``heard_s``, if that is later), and say whether this
        gateway answers it: its claim ranks first of those that count (``on_time``).

        The wait ends early once a claim of every gateway index is in (``all_claimed``):
        which claims count depends only on their own publishing times, so within the
        bound the rule rests on (a claim reaches every gateway within half of
        ``gather_s``) the decision is the one the whole wait would give, and the
        answer leaves that much earlier in RX1."""
        if not self.connected:
            self.figures["alone"] += 1
            self._count("downlink_alone")
            return True
        mine = rank(due, snr_db, self.index, self.gateway_id)
        claimed = time.time()
        doc = {"gateway": self.gateway_id, "index": self.index, "device": f"{device_id:08x}",
               "fcnt": fcnt, "snr_db": snr_db, "due": due, "at": claimed}
        self._client.publish(f"{self.prefix}/downlink/claim/{device_id:08x}",
                             json.dumps(doc, separators=(",", ":")), qos=1)
        self.figures["claims_sent"] += 1
        start = claimed if heard_s is None else max(heard_s, claimed)
        deadline = start + self.gather_s
        published: dict[str, float] = {}
        with self._lock:
            while not self._all_claimed(device_id, fcnt):
                left = deadline - time.time()
                if left <= 0:
                    break
                self._claim_heard.wait(left)
            else:
                self.figures["all_claimed"] += 1
            if (device_id, fcnt) in self._answered:
                won = False           # another gateway already sent after this uplink
            else:
                claims = {g: r for g, (r, _at) in self._claims.get((device_id, fcnt),
                                                                   {}).items()}
                claims[self.gateway_id] = mine
                published = dict(self._published.get((device_id, fcnt), {}))
                published[self.gateway_id] = claimed
                counted = on_time(claims, published, self.gather_s)
                won = self.gateway_id in counted and winner(counted) == self.gateway_id
        self.figures["won" if won else "lost"] += 1
        log.debug("device %08x fcnt %d: claimed %.3f s after it was heard; claims "
                  "published (s from this one's) %s; %s", device_id, fcnt,
                  claimed - (heard_s or claimed),
                  {g: round(t - claimed, 3) for g, t in published.items()},
                  "answers" if won else "does not answer")
        return won

    def _all_claimed(self, device_id: int, fcnt: int) -> bool:
        """Whether every other gateway index has claimed uplink ``fcnt`` (under the lock)."""
        if self.gateways is None:
            return False
        indexes = {-mark[2] for mark, _at in self._claims.get((device_id, fcnt), {}).values()}
        return indexes | {self.index} >= set(range(self.gateways))

    def best_snr(self, device_id: int, fcnt: int, own_snr_db: float | None) -> float | None:
        """The best SNR of uplink ``fcnt`` of all gateways that claimed it, this one
        (``own_snr_db``) included: what the data-rate rule records (``gateway.adr_history``)."""
        with self._lock:
            heard = [mark[1] for mark, _at in self._claims.get((device_id, fcnt), {}).values()
                     if mark[1] > -1e9]
        if own_snr_db is not None:
            heard.append(float(own_snr_db))
        return max(heard) if heard else None

    def announce(self, device_id: int, fcnt: int, dcnt: int, cmds: Sequence[Command]) -> None:
        """Tell the other gateways about a downlink this one sealed, before it leaves: the
        notice and the counter are at the broker (its PUBACK, at most ``NOTICE_ACK_S``)
        when this returns, so a gateway that dies right after sending has still told
        its counter (``publish`` only queues a message for the network thread)."""
        doc = {"gateway": self.gateway_id, "device": f"{device_id:08x}", "fcnt": fcnt,
               "dcnt": dcnt, "at": time.time(),
               "commands": [{"ref": command_ref(c, self.gateway_id), "cmd_id": c.cmd_id,
                             "op": c.op, "args": {k: v for k, v in c.args.items() if k != "key"},
                             "expires_at": c.expires_at}
                            for c in cmds]}
        sent = self._client.publish(f"{self.prefix}/downlink/sent/{device_id:08x}",
                                    json.dumps(doc, separators=(",", ":")), qos=1)
        counter = {"gateway": self.gateway_id, "device": f"{device_id:08x}", "dcnt": dcnt}
        kept = self._client.publish(
            f"{self.prefix}/downlink/counter/{device_id:08x}/{self.gateway_id}",
            json.dumps(counter, separators=(",", ":")), qos=1, retain=True)
        if not self.connected:
            return                   # answering alone: the session sends them later
        deadline = time.monotonic() + NOTICE_ACK_S
        for info in (sent, kept):
            try:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            except (RuntimeError, ValueError) as exc:
                log.warning("downlink claims: notice of downlink %d not published: %s", dcnt,
                            exc)
                return

    def announce_closed(self, device_id: int, fcnt: int, cmds: Sequence[Command]) -> None:
        """Tell the other gateways which commands the node's report in uplink ``fcnt``
        closed (on the topic of the sent notices, so they arrive after them)."""
        done = [{"ref": command_ref(c, self.gateway_id), "state": c.state,
                 "result": c.result, "detail": c.detail}
                for c in cmds if c.state in (APPLIED, REJECTED)]
        if not done:
            return
        doc = {"gateway": self.gateway_id, "device": f"{device_id:08x}", "fcnt": fcnt,
               "at": time.time(), "closed": done}
        self._client.publish(f"{self.prefix}/downlink/sent/{device_id:08x}",
                             json.dumps(doc, separators=(",", ":")), qos=1)

    def stats(self) -> dict[str, Any]:
        """For ``knute gateway status``."""
        return {"connected": self.connected, "subscribed": self.subscribed, **self.figures}
