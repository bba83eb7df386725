"""The gateway's TOML configuration (docs/operations.md is the reference).

``load(path)`` reads the file with tomllib and checks every key: an unknown
key, a wrong type or an out-of-range value raises one KnuteError naming the
file, the key and the problem (``knute`` prints it and exits with status 2).
Relative paths in the file are taken relative to the file's directory.
The ``[modbus]`` table is checked by ``gateway.modbus.settings`` (its register
maps too: a broken map is one error naming the map's file and line). What the
named files hold (TLS certificates, databases, serial devices) is checked by
``gateway.config_checks``.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from knute.gateway.errors import KnuteError
from knute.gateway.silence import SilenceSettings
from knute.gateway.silence import parse_settings as parse_silence

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

    from knute.gateway.modbus.settings import ModbusSettings

DEFAULT_STATUS_SOCKET = "/run/knute/gateway.sock"
MODBUS_SOURCE = "modbus"          # the Modbus poller's source name (counters, status)


MAX_INFLIGHT_RANGE = (1, 1000)
# The one default for [mqtt] max_inflight (it was 20 here and 64 in the forwarder).
# paho-mqtt's own figures (loopback, QoS 1): about 18k msg/s at 20 in flight, 6k at
# 1000: its in-flight bookkeeping grows with the window. Ours, `knute bench gateway
# --messages 20000 --backlog 20000 --inflight N` on the shared 2-core box: end to
# end 2.1k/2.2k/3.8k msg/s at 20, 1.8k/2.8k at 64, 3.3k at 200 (load noise is larger
# than any difference); draining 20k spooled rows 6.7/7.7/10.3 s at 20, 10.8/13.6 s
# at 64, 10.9 s at 200. A larger window buys nothing measurable and sends more rows
# twice after a lost connection, so 20.
DEFAULT_MAX_INFLIGHT = 20
DEFAULT_PARK_AFTER_LOSSES = 3
FAILBACK_POLICIES = ("primary", "stay")
MAX_BROKERS = 16


@dataclass(frozen=True)
class TlsSettings:
    """TLS for the broker connection, the [mqtt.tls] table; all None: the system's CAs."""

    ca: str | None = None      # CA bundle to verify the broker
    cert: str | None = None    # client certificate (mutual TLS)
    key: str | None = None     # its key


@dataclass(frozen=True)
class MqttConfig:
    """How to reach the broker and deliver to it: the [mqtt] table, checked.

    The one MQTT configuration type: ``gateway.config`` builds it from TOML,
    the forwarder, the demo and the benchmarks take it as it is.
    """

    host: str = "localhost"
    port: int = 1883
    client_id: str = ""                  # "" -> "knute-<gateway id>"
    protocol: str = "3.1.1"              # "3.1.1" or "5"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: TlsSettings | None = None       # None: plain TCP
    prefix: str = "knute"
    keepalive: int = 30
    max_inflight: int = DEFAULT_MAX_INFLIGHT
    qos: int = 1
    status_interval_s: float = 60.0
    backoff_min_s: float = 0.5
    backoff_max_s: float = 60.0
    connect_timeout_s: float = 10.0
    ack_timeout_s: float = 30.0
    park_after_losses: int = DEFAULT_PARK_AFTER_LOSSES   # MQTT 3.1.1 refusals; see forwarder
    max_message_bytes: int = 65536     # a larger reading is parked, never published
    # Several brokers: (host, port) in order of preference; empty: (host, port) alone.
    brokers: tuple[tuple[str, int], ...] = ()
    failback: str = "primary"          # "primary": back to the first broker up; "stay"
    failback_check_s: float = 30.0     # how often a connection to a later broker looks back
    learn_counters: bool = False       # learn other gateways' counters from their readings

    def __post_init__(self) -> None:
        if self.protocol not in ("3.1.1", "5"):
            raise KnuteError(f"mqtt protocol must be '3.1.1' or '5', not {self.protocol!r}")
        if self.qos != 1:
            raise KnuteError("mqtt qos must be 1 (at-least-once delivery from the spool)")
        lo, hi = MAX_INFLIGHT_RANGE
        if not lo <= self.max_inflight <= hi:
            raise KnuteError(f"mqtt max_inflight must be {lo}..{hi}, not {self.max_inflight}")
        if self.park_after_losses < 1:
            raise KnuteError("mqtt park_after_losses must be at least 1")
        if self.tls is not None and (self.tls.cert is None) != (self.tls.key is None):
            raise KnuteError("mqtt tls cert and key go together")
        if not 0 < self.backoff_min_s <= self.backoff_max_s:
            raise KnuteError("mqtt backoff needs 0 < backoff_min_s <= backoff_max_s")
        if self.failback not in FAILBACK_POLICIES:
            raise KnuteError(f"mqtt failback must be one of {', '.join(FAILBACK_POLICIES)}, "
                             f"not {self.failback!r}")
        if (not self.prefix or self.prefix.startswith("/") or self.prefix.endswith("/")
                or any(c in self.prefix for c in "+#\0")):
            raise KnuteError(f"mqtt prefix {self.prefix!r} must be a topic without wildcards "
                             "and without a leading or trailing '/'")

    @property
    def use_tls(self) -> bool:
        """True when the connection is TLS."""
        return self.tls is not None

    @property
    def broker_list(self) -> tuple[tuple[str, int], ...]:
        """Every broker in order of preference: ``brokers``, or (host, port) alone."""
        return self.brokers or ((self.host, self.port),)

    def configure_client(self, client: mqtt.Client) -> None:
        """Give a paho ``client`` this table's username, password and TLS settings.

        Every client of the gateway and its tools (the forwarder, the side channels,
        ``gateway check``, ``devices share``) signs in the same way; ``tls_set`` may
        raise ``ssl.SSLError`` or ``OSError`` for a bad CA or certificate file.
        """
        import ssl  # here: loading the configuration needs no TLS

        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        if self.tls is not None:
            client.tls_set(ca_certs=self.tls.ca, certfile=self.tls.cert, keyfile=self.tls.key,
                           cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)


@dataclass(frozen=True)
class SerialSourceConfig:
    """One [[serial]] source: a UART/USB link carrying knute link records."""

    name: str
    url: str
    baudrate: int = 115200
    reopen_min_s: float = 0.5
    reopen_max_s: float = 30.0


@dataclass(frozen=True)
class UdpSourceConfig:
    """One [[packet_forwarder]] source: a Semtech UDP packet-forwarder listener."""

    name: str
    host: str = "0.0.0.0"
    port: int = 1700
    gateways: tuple[str, ...] = ()       # allowed gateway EUIs (hex); empty: any
    max_datagram: int = 16384


@dataclass(frozen=True)
class DownlinkConfig:
    """The [downlinks] table: queue bounds, expiry and automatic answers."""

    enabled: bool = True
    max_queued: int = 32             # open commands per device
    expiry_s: float = 7 * 86400.0    # a command not applied by then is expired
    max_sends: int = 8               # sends without a report before it is expired
    auto_ack: bool = False           # acknowledge every alarm that asks for it
    status_topics: bool = True       # publish each command's progress on MQTT
    commands_from_mqtt: bool = True  # take commands from <prefix>/<kind>/<device>/down
    adr: bool = True                 # set LoRa nodes' SF and power by the data-rate rule
    adr_margin_db: float = 10.0      # the rule's installation margin (gateway/adr.py)
    adr_history: int = 20            # uplinks a decision rests on
    adr_hysteresis_db: float = 2.0   # margin kept above a step before it is spent
    adr_max_steps: int = 2           # margin-spending steps per decision
    gateway_index: int = 0           # this gateway's place among `gateways` (0..gateways-1)
    gateways: int = 1                # gateways of the city with their own registries
    gather_s: float = 0.3            # several gateways: claims heard before one answers


@dataclass(frozen=True)
class GatewayConfig:
    """Everything ``knute gateway run`` needs, checked."""

    path: str
    gateway_id: str
    registry: str
    spool: str
    spool_max_bytes: int = 1024 * 1024 * 1024
    spool_max_age_s: float = 30 * 86400.0
    spool_fsync: str = "full"
    dedup_window_s: float = 0.2
    max_receivers: int = 8
    counter_reset_below: int = 16
    drain_timeout_s: float = 10.0
    log_level: str = "info"
    clock_speed: float = 1.0             # simulations: receptions stamped on a faster clock
    clock_start: float | None = None     # ... running from this unix time (default: start)
    clock_file: str | None = None        # ... or from the epoch this file gives at run time
    status_socket: str = DEFAULT_STATUS_SOCKET
    metrics_host: str | None = None
    metrics_port: int | None = None
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    serial: tuple[SerialSourceConfig, ...] = ()
    packet_forwarders: tuple[UdpSourceConfig, ...] = ()
    modbus: ModbusSettings | None = None
    silence: SilenceSettings = field(default_factory=SilenceSettings)
    downlinks: DownlinkConfig = field(default_factory=DownlinkConfig)
    share_key: str | None = None         # [share] key: this gateway's registry-share key file
    # [share] peers: the other gateways' ids and public share keys (64 hex digits), the
    # gateways a key rotation reaches before the rekey goes out
    share_peers: tuple[tuple[str, str], ...] = ()

    @property
    def source_names(self) -> list[str]:
        """Names of every configured source."""
        names = [s.name for s in self.serial] + [u.name for u in self.packet_forwarders]
        if self.modbus is not None and self.modbus.devices:
            names.append(MODBUS_SOURCE)
        return names


class _Table:
    """Typed access to one TOML table; unknown keys are errors."""

    def __init__(self, file: str, prefix: str, data: Any) -> None:
        self.file = file
        self.prefix = prefix
        if not isinstance(data, dict):
            raise self.error("", "must be a table")
        self.data: dict[str, Any] = dict(data)
        self.used: set[str] = set()

    def name(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix and key else (self.prefix or key)

    def error(self, key: str, problem: str) -> KnuteError:
        return KnuteError(f"{self.file}: {self.name(key)}: {problem}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        self.used.add(key)
        if key not in self.data:
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if not ok:
            names = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
            raise self.error(key, f"must be {names}, got {value!r}")
        return value

    def text(self, key: str, default: Any = None, *, choices: tuple[str, ...] = ()) -> Any:
        value = self.get(key, str, default)
        if isinstance(value, str) and choices and value not in choices:
            raise self.error(key, f"must be one of {', '.join(choices)}, got {value!r}")
        if isinstance(value, str) and not value and default is not None and default != "":
            raise self.error(key, "must not be empty")
        return value

    def integer(self, key: str, default: int | None, lo: int, hi: int) -> Any:
        value = self.get(key, int, default)
        if value is not None and not lo <= value <= hi:
            raise self.error(key, f"must be {lo}..{hi}, got {value}")
        return value

    def number(self, key: str, default: float | None, lo: float, hi: float) -> Any:
        value = self.get(key, (int, float), default)
        if value is not None and not lo <= value <= hi:
            raise self.error(key, f"must be {lo:g}..{hi:g}, got {value}")
        return None if value is None else float(value)

    def flag(self, key: str, default: bool) -> bool:
        return bool(self.get(key, bool, default))

    def table(self, key: str) -> _Table | None:
        self.used.add(key)
        if key not in self.data:
            return None
        return _Table(self.file, self.name(key), self.data[key])

    def tables(self, key: str) -> list[_Table]:
        self.used.add(key)
        if key not in self.data:
            return []
        items = self.data[key]
        if not isinstance(items, list):
            raise self.error(key, f"must be an array of tables ([[{self.name(key)}]])")
        return [_Table(self.file, f"{self.name(key)}[{i}]", item)
                for i, item in enumerate(items)]

    def done(self) -> None:
        extra = sorted(set(self.data) - self.used)
        if extra:
            raise self.error(extra[0], "unknown key")


_TYPE_NAMES: dict[type, str] = {str: "a string", int: "an integer", float: "a number",
                                bool: "true or false", list: "an array", dict: "a table"}


def _path(base: str, value: str | None) -> str | None:
    if value is None:
        return None
    value = os.path.expanduser(value)
    return value if os.path.isabs(value) else os.path.normpath(os.path.join(base, value))


def _host_port(tab: _Table, key: str, default: str | None) -> tuple[str, int] | None:
    value = tab.text(key, default)
    if value is None:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise tab.error(key, f"must be HOST:PORT, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def load(path: str) -> GatewayConfig:
    """Read and check a gateway TOML file."""
    file = os.fspath(path)
    try:
        with open(file, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise KnuteError(f"{file}: no such file") from None
    except OSError as exc:
        raise KnuteError(f"{file}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise KnuteError(f"{file}: not valid TOML: {exc}") from None
    return parse(data, file)


def parse(data: dict[str, Any], file: str = "<config>") -> GatewayConfig:
    """Check an already-parsed TOML document (``file`` names it in errors)."""
    base = os.path.dirname(os.path.abspath(file))
    root = _Table(file, "", data)

    gw = root.table("gateway") or _Table(file, "gateway", {})
    gateway_id = gw.text("id", None)
    if not gateway_id:
        raise gw.error("id", "is required (a short name for this gateway, e.g. 'district-3')")
    if any(c in gateway_id for c in "/+# ") or len(gateway_id) > 64:
        raise gw.error("id", "must be 1..64 characters without '/', '+', '#' or spaces")
    data_dir = _path(base, gw.text("data_dir", "."))
    assert data_dir is not None
    registry = _path(data_dir, gw.text("registry", "registry.db"))
    dedup_ms = gw.integer("dedup_window_ms", 200, 0, 10000)
    max_receivers = gw.integer("max_receivers", 8, 1, 1000)
    reset_below = gw.integer("counter_reset_below", 16, 0, 1 << 20)
    drain = gw.number("drain_timeout_s", 10.0, 0.0, 3600.0)
    log_level = gw.text("log_level", "info",
                        choices=("debug", "info", "warning", "error"))
    clock_speed = gw.number("clock_speed", 1.0, 1.0, 1e6)
    clock_start = gw.number("clock_start", None, 0.0, 1e11)
    clock_file = _path(data_dir, gw.text("clock_file", None))
    if clock_file is not None and clock_speed == 1.0:
        raise gw.error("clock_file", "needs clock_speed above 1 (a simulation's clock)")
    gw.done()

    sp = root.table("spool") or _Table(file, "spool", {})
    spool = _path(data_dir, sp.text("path", "spool.db"))
    max_mb = sp.number("max_mb", 1024.0, 0.01, 1e7)
    max_age_days = sp.number("max_age_days", 30.0, 0.0001, 36500.0)
    fsync = sp.text("fsync", "full", choices=("full", "normal"))
    sp.done()

    st = root.table("status") or _Table(file, "status", {})
    status_socket = _path(base, st.text("socket", DEFAULT_STATUS_SOCKET))
    st.done()

    metrics_host = metrics_port = None
    mt = root.table("metrics")
    if mt is not None:
        listen = _host_port(mt, "listen", "127.0.0.1:9108")
        assert listen is not None
        metrics_host, metrics_port = listen
        mt.done()

    mqtt = _mqtt(root.table("mqtt") or _Table(file, "mqtt", {}), base, gateway_id)

    serial: list[SerialSourceConfig] = []
    for tab in root.tables("serial"):
        name = tab.text("name", None)
        url = tab.text("url", None)
        if not name:
            raise tab.error("name", "is required")
        if not url:
            raise tab.error("url", "is required (a device path or a pyserial URL)")
        if "://" not in url:
            url = _path(base, url)
        lo = tab.number("reopen_min_s", 0.5, 0.01, 3600.0)
        hi = tab.number("reopen_max_s", 30.0, 0.01, 3600.0)
        if hi < lo:
            raise tab.error("reopen_max_s", "must not be below reopen_min_s")
        serial.append(SerialSourceConfig(
            name=name, url=url, baudrate=tab.integer("baudrate", 115200, 50, 4_000_000),
            reopen_min_s=lo, reopen_max_s=hi))
        tab.done()

    udp: list[UdpSourceConfig] = []
    for tab in root.tables("packet_forwarder"):
        name = tab.text("name", None)
        if not name:
            raise tab.error("name", "is required")
        listen = _host_port(tab, "listen", "0.0.0.0:1700")
        assert listen is not None
        eui_list = tab.get("gateways", list, [])
        euis: list[str] = []
        for eui in eui_list:
            if not isinstance(eui, str) or len(eui) != 16 or not _is_hex(eui):
                raise tab.error("gateways", f"gateway EUIs are 16 hex digits, got {eui!r}")
            euis.append(eui.lower())
        udp.append(UdpSourceConfig(
            name=name, host=listen[0], port=listen[1], gateways=tuple(euis),
            max_datagram=tab.integer("max_datagram", 16384, 64, 65535)))
        tab.done()

    dl = root.table("downlinks") or _Table(file, "downlinks", {})
    downlinks = DownlinkConfig(
        enabled=dl.flag("enabled", True),
        max_queued=dl.integer("max_queued", 32, 1, 10000),
        expiry_s=dl.number("expiry_hours", 168.0, 0.01, 24.0 * 3650) * 3600.0,
        max_sends=dl.integer("max_sends", 8, 1, 1000),
        auto_ack=dl.flag("auto_ack", False),
        status_topics=dl.flag("status_topics", True),
        commands_from_mqtt=dl.flag("commands_from_mqtt", True),
        adr=dl.flag("adr", True),
        adr_margin_db=dl.number("adr_margin_db", 10.0, 0.0, 30.0),
        adr_history=dl.integer("adr_history", 20, 1, 100),
        adr_hysteresis_db=dl.number("adr_hysteresis_db", 2.0, 0.0, 10.0),
        adr_max_steps=dl.integer("adr_max_steps", 2, 1, 10),
        gateway_index=dl.integer("gateway_index", 0, 0, 63),
        gateways=dl.integer("gateways", 1, 1, 64),
        gather_s=dl.integer("gather_ms", 300, 50, 700) / 1000.0)
    if downlinks.gateway_index >= downlinks.gateways:
        raise dl.error("gateway_index", f"{downlinks.gateway_index} is not below "
                       f"gateways = {downlinks.gateways} (indexes are 0..gateways-1)")
    dl.done()

    modbus = None
    modbus_table = root.get("modbus", dict, None)
    if modbus_table is not None:
        from knute.gateway.modbus.settings import parse_settings

        modbus = parse_settings(modbus_table, file=file, base_dir=base)

    share_key = None
    share_peers: list[tuple[str, str]] = []
    sh = root.table("share")
    if sh is not None:
        share_key = _path(data_dir, sh.text("key", "share.key"))
        peers = sh.table("peers")
        if peers is not None:
            for peer_id in sorted(peers.data):
                share_peers.append((peer_id, _peer_public(peers, peer_id, data_dir)))
            peers.done()
            if gateway_id in dict(share_peers):
                raise sh.error("peers", f"names this gateway ({gateway_id!r}) itself")
        sh.done()

    silence = SilenceSettings()
    silence_table = root.get("silence", dict, None)
    if silence_table is not None:
        silence = parse_silence(silence_table, file)

    root.done()
    names = [s.name for s in serial] + [u.name for u in udp]
    if modbus is not None and modbus.devices:
        names.append(MODBUS_SOURCE)
    for name in names:
        if names.count(name) > 1:
            raise KnuteError(f"{file}: source name {name!r} is used twice"
                             + (" (the Modbus poller's name)" if name == MODBUS_SOURCE else ""))
    if not names:
        raise KnuteError(f"{file}: no sources: add a [[serial]], [[packet_forwarder]] or "
                         "[[modbus.device]] table")

    assert registry is not None and spool is not None and status_socket is not None
    return GatewayConfig(
        path=os.path.abspath(file), gateway_id=gateway_id, registry=registry, spool=spool,
        spool_max_bytes=int(max_mb * 1024 * 1024), spool_max_age_s=max_age_days * 86400.0,
        spool_fsync=fsync, dedup_window_s=dedup_ms / 1000.0, counter_reset_below=reset_below,
        max_receivers=max_receivers,
        drain_timeout_s=drain, log_level=log_level, status_socket=status_socket,
        clock_speed=float(clock_speed),
        clock_start=None if clock_start is None else float(clock_start),
        clock_file=clock_file,
        metrics_host=metrics_host, metrics_port=metrics_port, mqtt=mqtt,
        serial=tuple(serial), packet_forwarders=tuple(udp), modbus=modbus, silence=silence,
        downlinks=downlinks,
        share_key=share_key, share_peers=tuple(share_peers))


def _peer_public(peers: _Table, peer_id: str, data_dir: str) -> str:
    """One ``[share.peers]`` entry: a gateway id and its public share key, as 64 hex digits
    (the entry is the hex, or ``@FILE`` relative to ``data_dir``)."""
    text = str(peers.text(peer_id))
    if not 1 <= len(peer_id) <= 64 or any(c in peer_id for c in "/+# "):
        raise peers.error(peer_id, "a gateway id is 1..64 characters without '/', '+', '#' "
                          "or spaces")
    if text.startswith("@"):
        path = _path(data_dir, text[1:])
        assert path is not None
        try:
            with open(path, encoding="ascii") as fh:
                text = fh.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise peers.error(peer_id, f"{path}: {getattr(exc, 'strerror', None) or exc}"
                              ) from None
    text = text.strip()
    if not _is_hex(text) or len(text) != 64:
        raise peers.error(peer_id, "must be the gateway's public share key: 64 hex digits "
                          "(knute devices share-key at that gateway) or @FILE")
    return text.lower()


def _is_hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True


def _brokers(tab: _Table) -> tuple[tuple[str, int], ...]:
    """``brokers = ["host:port", ...]``: checked, each once, at most MAX_BROKERS."""
    items = tab.get("brokers", list, [])
    if "brokers" in tab.data and ("host" in tab.data or "port" in tab.data):
        raise tab.error("brokers", "give host/port or brokers, not both")
    if "brokers" in tab.data and not items:
        raise tab.error("brokers", "must name at least one broker as \"HOST:PORT\"")
    if len(items) > MAX_BROKERS:
        raise tab.error("brokers", f"at most {MAX_BROKERS} brokers, got {len(items)}")
    out: list[tuple[str, int]] = []
    for i, item in enumerate(items):
        host, sep, port = item.rpartition(":") if isinstance(item, str) else ("", "", "")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise tab.error(f"brokers[{i}]", f"must be \"HOST:PORT\", got {item!r}")
        if (host, int(port)) in out:
            raise tab.error(f"brokers[{i}]", f"{item!r} is listed twice")
        out.append((host, int(port)))
    return tuple(out)


def _mqtt(tab: _Table, base: str, gateway_id: str) -> MqttConfig:
    brokers = _brokers(tab)
    host = tab.text("host", "localhost")
    port = tab.integer("port", 1883, 1, 65535)
    if brokers:
        host, port = brokers[0]
    failback = tab.text("failback", "primary", choices=FAILBACK_POLICIES)
    failback_check = tab.number("failback_check_s", 30.0, 1.0, 86400.0)
    learn = tab.flag("learn_counters", False)
    client_id = tab.text("client_id", f"knute-{gateway_id}")
    protocol = tab.text("protocol", "3.1.1", choices=("3.1.1", "5"))
    username = tab.text("username", None)
    password = tab.text("password", None)
    password_file = _path(base, tab.text("password_file", None))
    if password is not None and password_file is not None:
        raise tab.error("password_file", "give password or password_file, not both")
    if password_file is not None:
        try:
            with open(password_file, encoding="utf-8") as fh:
                password = fh.read().strip()
        except OSError as exc:
            raise tab.error("password_file", f"{password_file}: {exc.strerror}") from None
    prefix = tab.text("prefix", "knute")
    if not prefix or prefix.startswith("/") or prefix.endswith("/") or any(
            c in prefix for c in "+#"):
        raise tab.error("prefix", f"must be a topic prefix without wildcards, got {prefix!r}")
    keepalive = tab.integer("keepalive", 30, 5, 3600)
    inflight = tab.integer("max_inflight", DEFAULT_MAX_INFLIGHT, *MAX_INFLIGHT_RANGE)
    park_after = tab.integer("park_after_losses", DEFAULT_PARK_AFTER_LOSSES, 1, 1000)
    max_message = tab.integer("max_message_bytes", 65536, 1024, 256 * 1024 * 1024)
    tls = None
    tt = tab.table("tls")
    if tt is not None:
        tls = TlsSettings(ca=_path(base, tt.text("ca", None)),
                          cert=_path(base, tt.text("cert", None)),
                          key=_path(base, tt.text("key", None)))
        for key, value in (("ca", tls.ca), ("cert", tls.cert), ("key", tls.key)):
            if value is not None and not os.path.exists(value):
                raise tt.error(key, f"{value}: no such file")
        if (tls.cert is None) != (tls.key is None):
            raise tt.error("key", "cert and key go together")
        tt.done()
    tab.done()
    return MqttConfig(host=host, port=port, client_id=client_id, protocol=protocol,
                      username=username, password=password, tls=tls, prefix=prefix,
                      keepalive=keepalive,
                      max_inflight=inflight, park_after_losses=park_after,
                      max_message_bytes=max_message, brokers=brokers, failback=failback,
                      failback_check_s=failback_check, learn_counters=learn)
