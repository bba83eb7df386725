"""``knute devices share-key | share | export``: one registry for a city's gateways.

    knute devices share-key                     this gateway's public key (the [share]
                                                key file is made if missing)
    knute devices share --gateway ID=PUBLIC ... publish this registry to those gateways,
                                                each key sealed for its gateway
    knute devices export --seal-for PUBLIC      the import CSV, keys sealed for one key

``share`` reads what is already retained for each gateway first and publishes
only what changed: a device added or changed is a new version, a device no
longer in the registry a tombstone; running it twice publishes nothing the
second time. Formats and rules: gateway.registry_share, docs/operations.md.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import threading
import time
from typing import Any

from knute.gateway.errors import KnuteError

SETTLE_S = 1.0      # after the SUBACK, retained messages stop arriving within this


def add_arguments(sub: Any, common: argparse.ArgumentParser) -> None:
    """The sharing sub-commands of ``knute devices``."""
    key = sub.add_parser("share-key", parents=[common],
                         help="print this gateway's public share key (made if missing)")
    key.add_argument("--json", action="store_true", help="print JSON")
    share = sub.add_parser("share", parents=[common],
                           help="publish this registry to gateways over the broker")
    share.add_argument("--gateway", action="append", required=True, metavar="ID=PUBLIC",
                       help="a gateway id and its public share key (64 hex digits or @FILE)")
    share.add_argument("--json", action="store_true", help="print the counts as JSON")
    exp = sub.add_parser("export", parents=[common],
                         help="write the registry as an import CSV, keys sealed")
    exp.add_argument("--seal-for", required=True, metavar="PUBLIC",
                     help="the public share key (64 hex digits or @FILE) that may open "
                          "the keys: the importing gateway's")
    exp.add_argument("--out", help="file to write (default: standard output)")


def _public(text: str) -> Any:
    from knute.gateway.registry_share import parse_public

    if text.startswith("@"):
        try:
            with open(text[1:], encoding="ascii") as fh:
                text = fh.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise KnuteError(f"{text[1:]}: {getattr(exc, 'strerror', None) or exc}") from None
    return parse_public(text)


def share_key(cfg: Any, as_json: bool) -> int:
    """Print the public key of the configuration's [share] key (creating the file)."""
    from knute.gateway.registry_share import new_private_key_file

    path = cfg.share_key
    if path is None:
        raise KnuteError(f"{cfg.path}: no [share] table (add [share] with key = \"share.key\")")
    public = new_private_key_file(path)
    print(json.dumps({"gateway": cfg.gateway_id, "public_key": public}) if as_json
          else f"{cfg.gateway_id}={public}")
    return 0


def export(registry: Any, seal_for: str, out: str | None) -> int:
    """Write every device in the import format, each key sealed for ``seal_for``."""
    from knute.gateway.device_csv import csv_header
    from knute.gateway.registry_share import SEALED_PREFIX, seal_key

    recipient = _public(seal_for)
    buf = io.StringIO()
    buf.write(csv_header())
    writer = csv.writer(buf, lineterminator="\n")
    for dev in registry.all():
        sealed = SEALED_PREFIX + seal_key(dev.key, recipient, dev.hex_id.encode())
        writer.writerow([dev.hex_id, dev.kind, sealed, dev.name, dev.site,
                         "" if dev.interval_s is None else f"{dev.interval_s:g}",
                         json.dumps(dict(dev.location), sort_keys=True, separators=(",", ":"))
                         if dev.location else ""])
    if out is None:
        print(buf.getvalue(), end="")
        return 0
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(buf.getvalue())
    except OSError as exc:
        raise KnuteError(f"{out}: {exc.strerror}") from None
    return 0


def open_sealed_csv(text: str, cfg: Any, source: str) -> str:
    """The CSV with every sealed key opened with this gateway's [share] key (as hex)."""
    from knute.gateway.device_fields import SEALED_PREFIX

    if SEALED_PREFIX not in text:       # keys in the clear: no X25519 to load
        return text
    from knute.gateway.registry_share import load_private_key, open_key

    if cfg is None or cfg.share_key is None:
        raise KnuteError(f"{source}: the keys are sealed; give --config of the gateway "
                         "whose [share] key they were sealed for")
    private = load_private_key(cfg.share_key)
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return text
    header = [c.strip().lower() for c in rows[0]]
    if "key" not in header or "device_id" not in header:
        return text
    k, d = header.index("key"), header.index("device_id")
    for n, row in enumerate(rows[1:], start=2):
        if len(row) > k and row[k].startswith(SEALED_PREFIX):
            try:
                from knute.gateway.device_fields import format_device_id, parse_device_id

                aad = format_device_id(parse_device_id(row[d])).encode()
                row[k] = open_key(row[k][len(SEALED_PREFIX):], private, aad).hex()
            except KnuteError as exc:
                raise KnuteError(f"{source} line {n}: {exc}; nothing imported") from None
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def share(cfg: Any, registry: Any, targets: list[str], as_json: bool) -> int:
    """Publish the registry to each target gateway; only what changed."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from knute.gateway.registry_share import (
        fingerprint,
        next_version,
        put_message,
        read_message,
        remove_message,
    )

    gateways: dict[str, Any] = {}
    for item in targets:
        gid, sep, public = item.partition("=")
        if not sep or not gid or any(c in gid for c in "/+# "):
            raise KnuteError(f"--gateway {item!r}: must be ID=PUBLIC")
        gateways[gid] = _public(public)
    prefix = cfg.mqtt.prefix
    retained: dict[str, bytes] = {}
    lock = threading.Lock()
    subscribed = threading.Event()

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        with lock:
            retained[msg.topic] = bytes(msg.payload)

    client = mqtt.Client(CallbackAPIVersion.VERSION2,
                         client_id=f"knute-share-{os.getpid()}", clean_session=True)
    cfg.mqtt.configure_client(client)
    client.on_message = on_message
    client.on_subscribe = lambda *_a: subscribed.set()
    errors: list[str] = []
    for host, port in cfg.mqtt.broker_list:
        try:
            client.connect(host, port, 30)
            break
        except OSError as exc:
            errors.append(f"{host}:{port}: {exc}")
    else:
        raise KnuteError(f"no broker reachable: {'; '.join(errors)}")
    client.loop_start()
    try:
        client.subscribe([(f"{prefix}/registry/{gid}/+", 1) for gid in gateways])
        if not subscribed.wait(15):
            raise KnuteError("the broker did not acknowledge the subscription in 15 s")
        time.sleep(SETTLE_S)
        devices = registry.all()
        counts: dict[str, dict[str, int]] = {}
        infos = []
        for gid, public in gateways.items():
            c = counts.setdefault(gid, {"published": 0, "removed": 0, "unchanged": 0})
            mine = f"{prefix}/registry/{gid}/"
            with lock:
                current = {t[len(mine):]: p for t, p in retained.items() if t.startswith(mine)}
            for dev in devices:
                topic = mine + dev.hex_id
                old = None
                if current.get(dev.hex_id):
                    try:
                        old = read_message(current[dev.hex_id], gateway_id=gid, private=None)
                    except KnuteError:
                        old = None
                location = dict(dev.location)
                if (old is not None and old.op == "put" and old.kind == dev.kind
                        and old.name == dev.name and old.site == dev.site
                        and old.location == location and old.interval_s == dev.interval_s
                        and old.fingerprint == fingerprint(dev.key)):
                    c["unchanged"] += 1
                    continue
                payload = put_message(gateway_id=gid, recipient=public,
                                      device_id=dev.device_id, kind=dev.kind, key=dev.key,
                                      name=dev.name, site=dev.site, location=location,
                                      interval_s=dev.interval_s,
                                      version=next_version(old.version if old else None))
                infos.append(client.publish(topic, payload, qos=1, retain=True))
                c["published"] += 1
            names = {dev.hex_id for dev in devices}
            for hex_id, payload in current.items():
                if hex_id in names or not payload:
                    continue
                try:
                    old = read_message(payload, gateway_id=gid, private=None)
                except KnuteError:
                    old = None
                if old is not None and old.op == "remove":
                    continue
                infos.append(client.publish(
                    mine + hex_id, remove_message(device_id=int(hex_id, 16),
                                                  version=next_version(
                                                      old.version if old else None)),
                    qos=1, retain=True))
                c["removed"] += 1
        for info in infos:
            info.wait_for_publish(timeout=30)
            if not info.is_published():
                raise KnuteError("the broker did not acknowledge every message in 30 s")
    finally:
        client.disconnect()
        client.loop_stop()
    if as_json:
        print(json.dumps(counts, sort_keys=True))
    else:
        for gid, c in counts.items():
            print(f"{gid}: {c['published']} published, {c['removed']} removed, "
                  f"{c['unchanged']} unchanged")
    return 0
