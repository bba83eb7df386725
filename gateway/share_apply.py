"""The gateway's side of the shared registry: apply what arrives, report conflicts.

``ShareState.offer`` runs on the listener's thread (gateway.peers) and only
queues; ``apply`` runs in the ingest loop every half second, writes the
registry through ``Registry.apply_shared`` (the registry watch then hands the
new snapshot to the pipeline) and keeps the others' key fingerprints;
``fingerprints`` says which retained fingerprint messages this gateway keeps
on the broker. Rules and formats: gateway.registry_share.
"""

from __future__ import annotations

import collections
import json
import logging
import queue
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from knute.gateway.device_fields import format_device_id
from knute.gateway.errors import KnuteError
from knute.gateway.model import Device
from knute.gateway.registry import Registry
from knute.gateway.registry_share import (
    check_topic_parts,
    conflicts,
    decide,
    fingerprint,
    kept_interval,
    read_message,
)

log = logging.getLogger("knute.share")


class ShareState:
    """Share messages waiting, what was applied, and the conflicts seen."""

    def __init__(self, private: X25519PrivateKey, *, prefix: str, gateway_id: str,
                 queue_limit: int = 200_000) -> None:
        self.private = private
        self.prefix = prefix
        self.gateway_id = gateway_id
        self.mine = f"{prefix}/registry/{gateway_id}/"
        self.topics = [f"{prefix}/registry/{gateway_id}/+", f"{prefix}/registry-check/+/+"]
        self._queue: queue.Queue[tuple[str, bytes]] = queue.Queue(queue_limit)
        self.counts: collections.Counter[str] = collections.Counter()
        self.errors: dict[str, str] = {}          # topic -> problem (bad messages)
        self.local_conflicts: dict[int, dict[str, Any]] = {}
        self._others: dict[tuple[int, str], str] = {}
        self._own: dict[int, str] = {}
        self._own_of: int | None = None           # id() of the device map _own was made of
        self._published: set[int] = set()
        self._reported: set[str] = set()
        self._conflicts: list[dict[str, Any]] = []

    # -- the listener's thread -----------------------------------------------------------

    def offer(self, topic: str, payload: bytes) -> None:
        """Queue one message (never blocks; a full queue drops and counts it)."""
        try:
            self._queue.put_nowait((topic, payload))
        except queue.Full:
            self.counts["dropped"] += 1

    # -- the ingest loop -----------------------------------------------------------------

    def apply(self, registry: Registry, limit: int = 5000) -> bool:
        """Apply up to ``limit`` waiting messages; True when the registry changed."""
        changed = False
        for _ in range(limit):
            try:
                topic, payload = self._queue.get_nowait()
            except queue.Empty:
                break
            if topic.startswith(self.mine):
                changed = self._apply_one(registry, topic, payload) or changed
                continue
            parts = check_topic_parts(topic, self.prefix)
            if parts is None:
                continue
            fp = ""
            try:
                doc = json.loads(payload) if payload else {}
                fp = str(doc.get("fingerprint", "")) if isinstance(doc, dict) else ""
            except ValueError:
                pass
            if fp:
                self._others[parts] = fp
            else:
                self._others.pop(parts, None)
        return changed

    def _apply_one(self, registry: Registry, topic: str, payload: bytes) -> bool:
        if not payload:                       # a retained message cleared by the operator
            return False
        try:
            shared = read_message(payload, gateway_id=self.gateway_id, private=self.private)
        except KnuteError as exc:
            self.counts["bad"] += 1
            if self.errors.get(topic) != str(exc):
                log.error("registry share %s: %s; ignored", topic, exc)
            self.errors[topic] = str(exc)
            return False
        self.errors.pop(topic, None)
        local, version = registry.shared_state(shared.device_id)
        if (shared.key is not None and local is not None and shared.key != local[1]
                and registry.rotated_away(shared.device_id, fingerprint(shared.key))):
            # The operator's registry still has the key a rotation replaced (the new key
            # never leaves the gateways): its other fields apply, the key stays.
            self.counts["kept_rotated_key"] += 1
            log.warning("device %s: the shared registry (version %d) has the key a rotation "
                        "replaced here; kept the current key", format_device_id(
                            shared.device_id), shared.version)
            shared = replace(shared, key=local[1], fingerprint=fingerprint(local[1]))
        action = decide(local, version, shared)
        self.counts[action] += 1
        name = format_device_id(shared.device_id)
        if action == "conflict":
            assert local is not None
            entry = {"device": name, "local": fingerprint(local[1]),
                     "shared": shared.fingerprint}
            if self.local_conflicts.get(shared.device_id) != entry:
                log.error("device %s: the shared registry has another key (%s) than the one "
                          "registered here (%s); kept the local one, resolve it by hand",
                          name, shared.fingerprint, entry["local"])
            self.local_conflicts[shared.device_id] = entry
            return False
        self.local_conflicts.pop(shared.device_id, None)
        if action in ("add", "update", "adopt"):
            registry.apply_shared(shared.device_id, shared.version,
                                  (shared.kind, shared.key, shared.name, shared.site,
                                   shared.location, kept_interval(local, shared)))
            log.info("device %s %s from the shared registry (version %d)", name,
                     {"add": "added", "update": "updated", "adopt": "joined"}[action],
                     shared.version)
            return True
        if action == "remove":
            registry.apply_shared(shared.device_id, shared.version, None)
            log.info("device %s removed by the shared registry (version %d)", name,
                     shared.version)
            return True
        return False

    def fingerprints(self, devices: Mapping[int, Device]) -> dict[str, bytes | None]:
        """Retained fingerprint messages to keep (None: clear) for this device map."""
        if self._own_of == id(devices):
            return {}
        self._own_of = id(devices)
        self._own = {d: fingerprint(dev.key) for d, dev in devices.items()}
        out: dict[str, bytes | None] = {}
        for device_id, fp in self._own.items():
            out[self._check_topic(device_id)] = json.dumps({"fingerprint": fp}).encode()
        for device_id in self._published - set(self._own):
            out[self._check_topic(device_id)] = None
        self._published = set(self._own)
        return out

    def _check_topic(self, device_id: int) -> str:
        return f"{self.prefix}/registry-check/{format_device_id(device_id)}/{self.gateway_id}"

    def refresh(self) -> None:
        """Recompute the conflicts (ingest loop; the status thread reads the result)."""
        self._conflicts = self._find_conflicts() + list(self.local_conflicts.values())

    def _find_conflicts(self) -> list[dict[str, Any]]:
        """Devices another gateway holds with a different key (logged once each)."""
        found = conflicts(self._own, self._others, self.gateway_id)
        for entry in found:
            tag = json.dumps(entry, sort_keys=True)
            if tag not in self._reported:
                self._reported.add(tag)
                log.error("device %s: gateways hold different keys: %s; the conflict is "
                          "reported, not resolved", entry["device"],
                          ", ".join(f"{g}={fp}" for g, fp in sorted(entry["gateways"].items())))
        return found

    def stats(self) -> dict[str, Any]:
        """For ``knute gateway status``: what was applied, bad messages, conflicts."""
        return {"applied": dict(self.counts), "waiting": self._queue.qsize(),
                "bad_messages": len(self.errors),
                "conflicts": list(self._conflicts)}
