"""Checks of a gateway configuration beyond the file's syntax: the files it names.

``gateway.config.load`` checks the TOML and that the files it names exist, as
whichever user runs ``knute`` (``knute devices`` loads it as an operator who may
not read the TLS key). What needs more (reading a certificate with ``ssl``,
opening a database file, looking at a device node) is here: ``offline_problems``
for ``knute gateway check``, ``tls_problems`` also at the daemon's start. Each
problem is one line naming the configuration file and the key.
"""

from __future__ import annotations

import os
import stat

from knute.gateway.config import GatewayConfig
from knute.gateway.errors import KnuteError


def tls_problems(cfg: GatewayConfig) -> list[str]:
    """Problems of the [mqtt.tls] files: a CA that is no PEM certificate, a bad cert/key.

    ``gateway.config.load`` only checks that the files exist: ``knute devices``
    loads the configuration as an operator who may not read the key. The daemon
    and ``knute gateway check`` call this.
    """
    tls = cfg.mqtt.tls
    if tls is None:
        return []
    import ssl  # here, after the check: a config without TLS never loads it

    problems: list[str] = []
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if tls.ca is not None:
        try:
            ctx.load_verify_locations(cafile=tls.ca)
        except (ssl.SSLError, OSError, ValueError) as exc:
            problems.append(f"{cfg.path}: mqtt.tls.ca: {tls.ca}: not a PEM CA certificate "
                            f"file ({_ssl_reason(exc)})")
    if tls.cert is not None and tls.key is not None:
        try:
            ctx.load_cert_chain(tls.cert, tls.key, password=lambda: b"")
        except (ssl.SSLError, OSError, ValueError) as exc:
            problems.append(f"{cfg.path}: mqtt.tls.cert/key: {tls.cert}, {tls.key}: not a "
                            f"PEM certificate and its unencrypted key ({_ssl_reason(exc)})")
    return problems


def _ssl_reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    if isinstance(exc, OSError) and not reason and exc.strerror:
        return exc.strerror
    return str(reason or exc)


def offline_problems(cfg: GatewayConfig) -> list[str]:
    """What can be checked without the network and without opening any port.

    TLS files, the data directories, the registry and spool files (a file
    that is not a knute database of the right kind), serial devices named by
    path (also the Modbus RTU buses). Files this user may not read are left
    to the daemon's own user.
    """
    from knute.gateway.dbfile import REGISTRY_APP_ID, SPOOL_APP_ID, check_identity

    problems = tls_problems(cfg)
    dirs: dict[str, str] = {}
    for key, path in (("gateway.registry", cfg.registry), ("spool.path", cfg.spool)):
        dirs.setdefault(os.path.dirname(path) or ".", key)
    for folder, key in dirs.items():
        if not os.path.exists(folder):
            problems.append(f"{cfg.path}: {key}: data directory {folder} does not exist")
        elif not os.path.isdir(folder):
            problems.append(f"{cfg.path}: {key}: {folder} is not a directory")
    from knute.gateway import registry, spool_schema  # not gateway.spool: its versions only

    for key, path, what, app_id, version in (
            ("gateway.registry", cfg.registry, "registry", REGISTRY_APP_ID,
             registry.SCHEMA_VERSION),
            ("spool.path", cfg.spool, "spool", SPOOL_APP_ID, spool_schema.SCHEMA_VERSION)):
        try:
            check_identity(path, what, app_id, version)
        except KnuteError as exc:
            if "Permission denied" not in str(exc):
                problems.append(f"{cfg.path}: {key}: {exc}")
    devices = [(f"serial[{i}].url", s.url) for i, s in enumerate(cfg.serial)]
    if cfg.modbus is not None:
        devices += [(f"modbus.bus[{i}].rtu", b.rtu) for i, b in enumerate(cfg.modbus.buses)
                    if b.rtu is not None]
    for key, url in devices:
        if "://" in url:
            continue                  # a pyserial URL: only `check --online` can open it
        if not os.path.exists(url):
            problems.append(f"{cfg.path}: {key}: {url}: no such device (unplugged?)")
        elif not stat.S_ISCHR(os.stat(url).st_mode):
            problems.append(f"{cfg.path}: {key}: {url} is not a serial device")
    return problems
