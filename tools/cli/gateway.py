"""``knute gateway run|status|check``: the gateway daemon and its live counters.

    knute gateway run --config /etc/knute/gateway.toml [--log-json] [--log-level debug]
    knute gateway status [--config FILE | --socket PATH] [--json]
    knute gateway tap [--config FILE | --socket PATH] [--json] [--count N] [--for S]
    knute gateway check --config FILE        (read and check the configuration only)

``status`` asks the running daemon over its unix status socket
(``[status] socket`` in the configuration). ``tap`` stays connected to it and
prints every frame the gateway decides on as it happens: its hex (what
``knute decode`` reads) and what became of it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from gateway.errors import KnuteError

DEFAULT_CONFIG = "/etc/knute/gateway.toml"


def default_config() -> str:
    """$KNUTE_CONFIG or /etc/knute/gateway.toml."""
    return os.environ.get("KNUTE_CONFIG", DEFAULT_CONFIG)


def add_arguments(parser: argparse.ArgumentParser, name: str = "gateway") -> None:
    """Sub-commands run, status and check."""
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
    check.add_argument("--json", action="store_true", help="print the summary as JSON")


def run(args: argparse.Namespace) -> int:
    """Dispatch to run, status or check."""
    action = args.gateway_command
    if action == "run":
        return _run(args)
    if action == "status":
        return _status(args)
    if action == "tap":
        return _tap(args)
    return _check(args)


def _run(args: argparse.Namespace) -> int:
    from gateway import config
    from gateway.daemon import Daemon, setup_logging

    cfg = config.load(args.config)
    setup_logging(args.log_level or cfg.log_level, args.log_json)
    return Daemon(cfg).run()


def _check(args: argparse.Namespace) -> int:
    from gateway import config

    cfg = config.load(args.config)
    summary: dict[str, Any] = {
        "config": cfg.path, "gateway": cfg.gateway_id, "registry": cfg.registry,
        "spool": cfg.spool, "status_socket": cfg.status_socket,
        "mqtt": f"{cfg.mqtt.host}:{cfg.mqtt.port}", "prefix": cfg.mqtt.prefix,
        "sources": [{"name": s.name, "type": "serial", "url": s.url} for s in cfg.serial]
        + [{"name": u.name, "type": "packet_forwarder", "listen": f"{u.host}:{u.port}"}
           for u in cfg.packet_forwarders],
        "metrics": (f"{cfg.metrics_host}:{cfg.metrics_port}"
                    if cfg.metrics_port is not None else None),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{cfg.path}: OK (gateway {cfg.gateway_id}, {len(summary['sources'])} sources)")
    return 0


def socket_path(config_path: str | None, socket_arg: str | None) -> str:
    """The status socket: --socket, else the one the configuration names."""
    if socket_arg:
        return socket_arg
    from gateway import config

    return config.load(config_path or default_config()).status_socket


def _status(args: argparse.Namespace) -> int:
    from gateway.status import request

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
                 f"oldest {spool.get('oldest_age_s', 0)} s")
    fwd = st.get("forwarder", {})
    lines.append(f"mqtt: {fwd.get('state', '?')}  forwarded {fwd.get('forwarded_total', 0)}  "
                 f"in flight {fwd.get('inflight', 0)}  reconnects {fwd.get('reconnects', 0)}")
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
