"""``knute gateway run|status|check``: the gateway daemon and its live counters.

    knute gateway run --config /etc/knute/gateway.toml [--log-json] [--log-level debug]
    knute gateway status [--config FILE | --socket PATH] [--json]
    knute gateway check --config FILE        (read and check the configuration only)
    knute gateway parked [--config FILE | --spool PATH] [--limit N] [--json]

``status`` asks the running daemon over its unix status socket
(``[status] socket`` in the configuration). ``parked`` lists the messages the
spool took out of the delivery queue (refused by the broker, or over
``[mqtt] max_message_bytes``), read-only from the spool file.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from gateway.errors import KnuteError

DEFAULT_CONFIG = "/etc/knute/gateway.toml"


def default_config() -> str:
    """$KNUTE_CONFIG or /etc/knute/gateway.toml."""
    return os.environ.get("KNUTE_CONFIG", DEFAULT_CONFIG)


def add_arguments(parser: argparse.ArgumentParser, name: str = "gateway") -> None:
    """Sub-commands run, status, check and parked."""
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
    check = sub.add_parser("check", help="check a configuration file and print a summary")
    check.add_argument("--config", default=default_config(), help="gateway TOML file")
    check.add_argument("--json", action="store_true", help="print the summary as JSON")
    parked = sub.add_parser("parked", help="list messages parked in the spool (not published)")
    parked.add_argument("--config", default=None,
                        help="gateway TOML file, to find the spool (default: $KNUTE_CONFIG)")
    parked.add_argument("--spool", default=None, help="the spool file path")
    parked.add_argument("--limit", type=int, default=20,
                        help="most recently parked rows shown (default 20)")
    parked.add_argument("--json", action="store_true", help="print the rows as JSON")


def run(args: argparse.Namespace) -> int:
    """Dispatch to run, status, check or parked."""
    action = args.gateway_command
    if action == "run":
        return _run(args)
    if action == "status":
        return _status(args)
    if action == "parked":
        return _parked(args)
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


def _parked(args: argparse.Namespace) -> int:
    from gateway.spool import read_parked

    path = args.spool
    if not path:
        from gateway import config

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
