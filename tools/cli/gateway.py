"""``knute gateway run|status|tap|check|parked``: the gateway daemon and its live counters.

    knute gateway run --config /etc/knute/gateway.toml [--log-json] [--log-level debug]
    knute gateway status [--config FILE | --socket PATH] [--json]
    knute gateway tap [--config FILE | --socket PATH] [--json] [--count N] [--for S]
    knute gateway check --config FILE [--online] [--json]
    knute gateway parked [--config FILE | --spool PATH] [--limit N] [--json]

``check`` reads the configuration and checks what it can offline (TLS files,
data directories, registry and spool files, serial devices); ``--online``
also connects to the broker and opens every source once. Problems are listed
one a line on stderr and the status is 2.

``status`` asks the running daemon over its unix status socket
(``[status] socket`` in the configuration). ``tap`` stays connected to it and
prints every frame the gateway decides on as it happens: its hex (what
``knute decode`` reads) and what became of it. ``parked`` lists the messages
the spool took out of the delivery queue (refused by the broker, or over
``[mqtt] max_message_bytes``), read-only from the spool file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from knute.gateway.errors import KnuteError

DEFAULT_CONFIG = "/etc/knute/gateway.toml"


def default_config() -> str:
    """$KNUTE_CONFIG or /etc/knute/gateway.toml."""
    return os.environ.get("KNUTE_CONFIG", DEFAULT_CONFIG)


def add_arguments(parser: argparse.ArgumentParser, name: str = "gateway") -> None:
    """Sub-commands run, status, tap, check and parked."""
    sub = parser.add_subparsers(dest="gateway_command", metavar="ACTION", required=True)
    run = sub.add_parser("run", help="run the gateway daemon in the foreground")
    run.add_argument("--config", default=default_config(),
                     help="gateway TOML file (default: $KNUTE_CONFIG or %(default)s)")
    run.add_argument("--log-json", action="store_true",
                     help="log one JSON object per line (for log shippers)")
    run.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                     help="override [gateway] log_level")
    status = sub.add_parser("status", help="print a running gateway's live counters")
    status.add_argument("--config", default=None,
                        help="gateway TOML file, to find the status socket")
    status.add_argument("--socket", default=None, help="the status socket path")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    tap = sub.add_parser("tap", help="print each frame a running gateway accepts or "
                                     "rejects: hex and decoded summary")
    tap.add_argument("--config", default=None,
                     help="gateway TOML file, to find the status socket")
    tap.add_argument("--socket", default=None, help="the status socket path")
    tap.add_argument("--json", action="store_true",
                     help="one JSON object per frame (accepted: hex and the MQTT reading)")
    tap.add_argument("--count", type=int, metavar="N", help="stop after N frames")
    tap.add_argument("--for", dest="for_s", type=float, metavar="S",
                     help="stop after S seconds")
    check = sub.add_parser("check", help="check a configuration file and print a summary")
    check.add_argument("--config", default=default_config(), help="gateway TOML file")
    check.add_argument("--online", action="store_true",
                       help="also connect to the broker and open every source once")
    check.add_argument("--json", action="store_true", help="print the summary as JSON")
    parked = sub.add_parser("parked", help="list messages parked in the spool (not published)")
    parked.add_argument("--config", default=None,
                        help="gateway TOML file, to find the spool (default: $KNUTE_CONFIG)")
    parked.add_argument("--spool", default=None, help="the spool file path")
    parked.add_argument("--limit", type=int, default=20,
                        help="most recently parked rows shown (default 20)")
    parked.add_argument("--json", action="store_true", help="print the rows as JSON")


def run(args: argparse.Namespace) -> int:
    """Dispatch to run, status, tap, check or parked."""
    action = args.gateway_command
    if action == "run":
        return _run(args)
    if action == "status":
        return _status(args)
    if action == "tap":
        return _tap(args)
    if action == "parked":
        return _parked(args)
    return _check(args)


def _run(args: argparse.Namespace) -> int:
    from knute.gateway import config
    from knute.gateway.daemon import Daemon
    from knute.gateway.errors import ConfigError
    from knute.gateway.logsetup import setup_logging

    try:
        cfg = config.load(args.config)
    except KnuteError as exc:           # restarting will not fix the file: exit 78
        raise ConfigError(str(exc)) from None
    setup_logging(args.log_level or cfg.log_level, args.log_json)
    return Daemon(cfg).run()


def _check(args: argparse.Namespace) -> int:
    from knute.gateway import config, config_checks, fastwalk

    cfg = config.load(args.config)
    sources: list[dict[str, Any]] = (
        [{"name": s.name, "type": "serial", "url": s.url} for s in cfg.serial]
        + [{"name": u.name, "type": "packet_forwarder", "listen": f"{u.host}:{u.port}"}
           for u in cfg.packet_forwarders])
    if cfg.modbus is not None and cfg.modbus.devices:
        sources.append({"name": config.MODBUS_SOURCE, "type": "modbus",
                        "buses": [b.target for b in cfg.modbus.buses],
                        "devices": len(cfg.modbus.devices)})
    problems = config_checks.offline_problems(cfg)
    online: list[dict[str, Any]] = []
    if args.online:
        online = online_checks(cfg)
        problems += [f"{item['what']}: {item['error']}" for item in online if not item["ok"]]
    summary: dict[str, Any] = {
        "config": cfg.path, "gateway": cfg.gateway_id, "registry": cfg.registry,
        "spool": cfg.spool, "status_socket": cfg.status_socket,
        "mqtt": f"{cfg.mqtt.host}:{cfg.mqtt.port}", "prefix": cfg.mqtt.prefix,
        "sources": sources,
        "metrics": (f"{cfg.metrics_host}:{cfg.metrics_port}"
                    if cfg.metrics_port is not None else None),
        "online": online if args.online else None,
        "fast_path": fastwalk.which(),
        "problems": problems,
        "ok": not problems,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0 if not problems else 2
    for item in online:
        if item["ok"]:
            print(f"{item['what']}: {item['detail']}")
    names = ", ".join(s["name"] for s in sources)
    if problems:
        for problem in problems:
            print(f"knute gateway check: {problem}", file=sys.stderr)
        print(f"{cfg.path}: {len(problems)} problem(s) (gateway {cfg.gateway_id}, "
              f"{len(sources)} sources: {names})", file=sys.stderr)
        return 2
    scope = "offline and online" if args.online else "offline; --online also tries the " \
        "broker and the sources"
    print(f"{cfg.path}: OK (gateway {cfg.gateway_id}, {len(sources)} sources: {names}; "
          f"checked {scope})")
    print(WALKS[fastwalk.which()])
    return 0


# `knute gateway check`'s line on the payload walk the gateway will run (fast_path in --json)
WALKS = {"c": "payload walk: c (the compiled extension gateway/_fastframe)",
         "python": "payload walk: python (the C extension is not built or KNUTE_FAST_PATH=python;"
                   " the same checks, slower per accepted frame)"}


ONLINE_TIMEOUT_S = 10.0


def online_checks(cfg: Any) -> list[dict[str, Any]]:
    """Connect to the broker and open every source once; one entry per thing tried.

    Each entry: ``what`` (the config key), ``ok``, and ``detail`` or ``error``.
    Sources are opened and closed at once; a packet-forwarder port that a
    running gateway holds is reported as such.
    """
    results = [_check_broker(cfg)]
    for i, scfg in enumerate(cfg.serial):
        results.append(_check_serial(f"serial[{i}] {scfg.name!r}", scfg.url, scfg.baudrate))
    for i, ucfg in enumerate(cfg.packet_forwarders):
        results.append(_check_udp(f"packet_forwarder[{i}] {ucfg.name!r}", ucfg.host,
                                  ucfg.port))
    modbus: Any = cfg.modbus
    if modbus is not None:
        for i, bus in enumerate(modbus.buses):
            what = f"modbus.bus[{i}] {bus.name!r}"
            if bus.tcp is not None:
                results.append(_check_tcp(what, bus.tcp[0], bus.tcp[1]))
            elif bus.rtu is not None:
                results.append(_check_serial(what, bus.rtu, bus.baudrate))
    return results


def _result(what: str, error: str | None, detail: str = "") -> dict[str, Any]:
    if error is None:
        return {"what": what, "ok": True, "detail": detail}
    return {"what": what, "ok": False, "error": error}


def _check_broker(cfg: Any) -> dict[str, Any]:
    """One MQTT connection with the gateway's settings (its own client id + "-check")."""
    import ssl
    import threading

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    mq = cfg.mqtt
    what = f"mqtt {mq.host}:{mq.port}"
    v5 = mq.protocol == "5"
    # Never the gateway's own client id: the broker would disconnect the running gateway.
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{mq.client_id}-check",
                         protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
    answered = threading.Event()
    outcome: dict[str, Any] = {}

    def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any = None) -> None:
        outcome["reason"] = reason
        answered.set()

    client.on_connect = on_connect
    client.connect_timeout = ONLINE_TIMEOUT_S
    try:
        mq.configure_client(client)
        client.connect(mq.host, mq.port, 30)
    except (OSError, ssl.SSLError, ValueError) as exc:
        return _result(what, f"cannot connect: {exc}")
    client.loop_start()
    try:
        if not answered.wait(ONLINE_TIMEOUT_S):
            return _result(what, f"no CONNACK in {ONLINE_TIMEOUT_S:g} s")
        reason = outcome["reason"]
        if getattr(reason, "is_failure", False):
            return _result(what, f"broker refused the connection: {reason}")
        return _result(what, None, "connected (CONNACK), "
                                   + ("TLS" if mq.tls is not None else "plain TCP"))
    finally:
        client.disconnect()
        client.loop_stop()


def _check_serial(what: str, url: str, baudrate: int) -> dict[str, Any]:
    import serial  # type: ignore[import-untyped]

    try:
        port = serial.serial_for_url(url, baudrate=baudrate, timeout=0)
    except (serial.SerialException, OSError, ValueError) as exc:
        return _result(what, f"cannot open {url}: {exc}")
    port.close()
    return _result(what, None, f"{url} opens")


def _check_udp(what: str, host: str, port: int) -> dict[str, Any]:
    import errno
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                       socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return _result(what, None, f"{host}:{port} is in use (by a running gateway?)")
            return _result(what, f"cannot listen on {host}:{port}: {exc.strerror}")
    return _result(what, None, f"{host}:{port} can listen")


def _check_tcp(what: str, host: str, port: int) -> dict[str, Any]:
    import socket

    try:
        with socket.create_connection((host, port), timeout=ONLINE_TIMEOUT_S):
            pass
    except OSError as exc:
        return _result(what, f"cannot connect to {host}:{port}: {exc.strerror or exc}")
    return _result(what, None, f"{host}:{port} accepts connections")
def _parked(args: argparse.Namespace) -> int:
    from knute.gateway.spool import read_parked

    path = args.spool
    if not path:
        from knute.gateway import config

        path = config.load(args.config or default_config()).spool
    count, rows = read_parked(path, max(0, args.limit))
    if args.json:
        print(json.dumps({"spool": path, "parked": count, "rows": [
            {"row_id": r.row_id, "device": f"{r.device_id:08x}", "fcnt": r.fcnt,
             "kind": r.kind, "topic": r.topic, "bytes": len(r.payload), "alarm": r.alarm,
             "received_at": iso(r.received_at), "parked_at": iso(r.parked_at),
             "reason": r.reason} for r in rows]}, indent=2))
        return 0
    print(f"{path}: {count} parked" + (f", newest {len(rows)} shown" if rows else ""))
    for r in rows:
        print(f"  {iso(r.parked_at)}  row {r.row_id}  {r.topic}  fcnt {r.fcnt}  "
              f"{len(r.payload)} bytes  {r.reason}")
    return 0


def socket_path(config_path: str | None, socket_arg: str | None) -> str:
    """The status socket: --socket, else the one the configuration names."""
    if socket_arg:
        return socket_arg
    from knute.gateway import config

    return config.load(config_path or default_config()).status_socket


def _status(args: argparse.Namespace) -> int:
    from knute.gateway.status import request

    path = socket_path(args.config, args.socket)
    try:
        reply = request(path, {"cmd": "status"})
    except (OSError, ValueError) as exc:
        raise KnuteError(f"no gateway answers on {path}: {exc}") from None
    if args.json:
        print(json.dumps(reply, indent=2, sort_keys=True))
    else:
        print(format_status(reply))
    return 0


def _tap(args: argparse.Namespace) -> int:
    import socket

    path = socket_path(args.config, args.socket)
    deadline = None if args.for_s is None else time.monotonic() + args.for_s
    frames = 0
    pending = b""
    hello = False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5.0)
            sock.connect(path)
            sock.sendall(b'{"cmd": "tap"}\n')
            while args.count is None or frames < args.count:
                left = 1.0 if deadline is None else deadline - time.monotonic()
                if left <= 0:
                    break
                sock.settimeout(min(left, 1.0) if hello else 5.0)
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    if not hello:
                        raise
                    continue
                if not chunk:
                    raise KnuteError(f"the gateway on {path} stopped")
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    event = json.loads(line)
                    if not hello:
                        if not event.get("tap"):
                            raise KnuteError(f"the gateway on {path} has no tap "
                                             f"({event.get('error', 'no answer')}): update it")
                        hello = True
                        print(f"knute gateway tap: listening on {path} (Ctrl-C to stop)",
                              file=sys.stderr, flush=True)
                        continue
                    if args.count is not None and frames >= args.count:
                        break
                    if event.get("event") in ("accepted", "rejected"):
                        frames += 1
                    print(json.dumps(event, ensure_ascii=False) if args.json
                          else format_tap_event(event), flush=True)
    except (OSError, ValueError) as exc:
        raise KnuteError(f"no gateway answers on {path}: {exc}") from None
    except KeyboardInterrupt:
        pass
    return 0


def format_tap_event(event: dict[str, Any]) -> str:
    """One tap event as text: a summary line, then the frame's hex on its own line."""
    kind = event.get("event")
    if kind == "dropped":
        return f"(this terminal was too slow: {event.get('count')} frames not shown)"
    hex_line = f"\n  frame {event['hex']}" if event.get("hex") else ""
    if kind == "rejected":
        who = (f" {event['device']} fcnt {event['fcnt']}" if event.get("device") else "")
        detail = f" ({event['detail']})" if event.get("detail") else ""
        return (f"{event.get('received_at', '')} {event.get('source', '')}  REJECTED "
                f"{event.get('reason')}{who}{detail}{hex_line}")
    reading = event.get("reading", {})
    return (f"{reading.get('received_at', '')} {event.get('source', '')}  accepted "
            f"{reading.get('kind')} {reading.get('device')} fcnt {reading.get('fcnt')}: "
            f"{reading_summary(reading)}{hex_line}")


def reading_summary(reading: dict[str, Any]) -> str:
    """An MQTT reading in a few words: readings with units, battery, alarms, profile."""
    parts = []
    for name, item in reading.get("readings", {}).items():
        value = "-" if item.get("value") is None else item["value"]
        parts.append(f"{name} {value}{' ' + item['unit'] if item.get('unit') else ''}")
    if reading.get("battery") is not None:
        parts.append(f"battery {reading['battery']} %")
    parts.append("alarms " + (",".join(reading["alarms"]) if reading.get("alarms") else "-"))
    profile = reading.get("profile") or []
    if profile:
        values = [slot.get("litres", slot.get("value")) for slot in profile]
        unit = " L" if "litres" in profile[0] else ""
        parts.append(f"profile {','.join(str(v) for v in values)}{unit} "
                     f"to {profile[-1]['end']}")
    return ", ".join(parts)


def format_status(st: dict[str, Any]) -> str:
    """The human-readable status report."""
    totals = st.get("totals", {})
    lines = [
        f"gateway {st.get('gateway')}  pid {st.get('pid')}  up {_duration(st.get('uptime_s', 0))}"
        f"  {st.get('devices', 0)} devices",
        "frames: " + "  ".join(f"{k} {totals.get(k, 0)}" for k in (
            "received", "accepted", "merged", "rejected", "spooled", "evicted", "forwarded")),
    ]
    rejected = st.get("rejected", {})
    if rejected:
        lines.append("rejected by reason: " + "  ".join(
            f"{k} {v}" for k, v in sorted(rejected.items(), key=lambda kv: (-kv[1], kv[0]))))
    lines.append("sources:")
    for name, src in sorted(st.get("sources", {}).items()):
        where = src.get("url") or src.get("listen") or ""
        lines.append(f"  {name:<16} {src.get('type', ''):<16} {src.get('state', ''):<8} "
                     f"received {src.get('received', 0)}  accepted {src.get('accepted', 0)}  "
                     f"rejected {src.get('rejected', 0)}  {where}")
    spool = st.get("spool", {})
    lines.append(f"spool: {spool.get('depth', 0)} rows, {spool.get('bytes', 0)} bytes, "
                 f"oldest {spool.get('oldest_age_s', 0)} s, parked {spool.get('parked', 0)}")
    fwd = st.get("forwarder", {})
    lines.append(f"mqtt: {fwd.get('state', '?')}  forwarded {fwd.get('forwarded_total', 0)}  "
                 f"in flight {fwd.get('inflight', 0)}  reconnects {fwd.get('reconnects', 0)}"
                 + (f"  broker {fwd.get('broker')}" + ("  EVERY BROKER DOWN"
                                                       if fwd.get("all_brokers_down") else "")
                    if len(fwd.get("brokers", ())) > 1 else ""))
    peers = st.get("peers")
    if peers:
        lines.append(f"peers: {'connected' if peers.get('connected') else 'not connected'}  "
                     f"heard {peers.get('heard', 0)}  counters learned {peers.get('learned', 0)}")
    share = (st.get("registry") or {}).get("share")
    if share:
        conflicts = share.get("conflicts", [])
        lines.append(f"registry share: applied {sum(share.get('applied', {}).values())}  "
                     f"bad messages {share.get('bad_messages', 0)}  conflicts {len(conflicts)}"
                     + (": " + " ".join(c["device"] for c in conflicts[:10]) if conflicts
                        else ""))
    silence = st.get("silence")
    if silence is not None:
        names = silence.get("devices", [])
        shown = " ".join(names[:10]) + (f" ... (+{len(names) - 10})" if len(names) > 10 else "")
        lines.append(f"silent: {silence.get('silent', 0)} devices"
                     + (f": {shown}" if names else ""))
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{s:02d}s"


def iso(ts: float | None) -> str:
    """A unix time as UTC ISO 8601, or '-'."""
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
