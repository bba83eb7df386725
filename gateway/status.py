"""Live counters and the local status endpoint of a running gateway.

Counters: ``Counters`` is a thread-safe bag of integer counters, global and per
source (received, accepted, merged, rejected by reason). The daemon combines
it with the spool's and the forwarder's stats into one status dict.

Endpoint: the daemon listens on a unix stream socket (``[status] socket``, mode
0660). A client sends one JSON request line and reads one JSON reply line:

    {"cmd": "status"}                     -> the status dict
    {"cmd": "reset-counter", "device": n} -> {"ok": true} once the pipeline forgot it
    {"cmd": "reload"}                     -> {"ok": true}; the registry is re-read

A unix socket needs no port, cannot be reached from the network and is guarded
by file permissions; ``knute gateway status`` reads it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any

REQUEST_LIMIT = 4096


class Counters:
    """Integer counters, global and per source, safe to bump from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: dict[str, int] = defaultdict(int)
        self._rejected: dict[str, int] = defaultdict(int)
        self._sources: dict[str, dict[str, int]] = {}
        self._source_rejected: dict[str, dict[str, int]] = {}

    def inc(self, name: str, source: str | None = None, n: int = 1, *,
            total: bool = True) -> None:
        """Add ``n`` to counter ``name`` and to the source's own counter.

        ``total=False`` counts for the source only (a frame heard by two sources
        is accepted once in total but once for each source).
        """
        with self._lock:
            if total:
                self._totals[name] += n
            if source is not None:
                src = self._sources.setdefault(source, defaultdict(int))
                src[name] += n

    def reject(self, reason: str, source: str | None = None, n: int = 1) -> None:
        """Count a rejected frame by reason."""
        with self._lock:
            self._totals["rejected"] += n
            self._rejected[reason] += n
            if source is not None:
                src = self._sources.setdefault(source, defaultdict(int))
                src["rejected"] += n
                rej = self._source_rejected.setdefault(source, defaultdict(int))
                rej[reason] += n

    def get(self, name: str) -> int:
        """One global counter."""
        with self._lock:
            return self._totals.get(name, 0)

    def rejected(self, reason: str) -> int:
        """Rejections for one reason."""
        with self._lock:
            return self._rejected.get(reason, 0)

    def snapshot(self) -> dict[str, Any]:
        """A copy: {"totals", "rejected", "sources": {name: {..., "rejected_by_reason"}}}."""
        with self._lock:
            sources: dict[str, Any] = {}
            for name, src in self._sources.items():
                entry: dict[str, Any] = dict(src)
                entry["rejected_by_reason"] = dict(self._source_rejected.get(name, {}))
                sources[name] = entry
            return {"totals": dict(self._totals), "rejected": dict(self._rejected),
                    "sources": sources}


Handler = Callable[[dict[str, Any]], dict[str, Any]]


class StatusServer:
    """Serves JSON requests on a unix socket from its own thread."""

    def __init__(self, path: str, handler: Handler) -> None:
        self.path = path
        self._handler = handler
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        directory = os.path.dirname(path) or "."
        os.makedirs(directory, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o117)
        try:
            self._sock.bind(path)
        finally:
            os.umask(old)
        self._sock.listen(8)
        self._sock.settimeout(0.5)

    def start(self) -> None:
        """Start answering requests."""
        self._thread = threading.Thread(target=self._serve, name="knute-status", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5.0)
                try:
                    request = _read_line(conn)
                    try:
                        parsed = json.loads(request)
                        if not isinstance(parsed, dict):
                            raise ValueError("request must be a JSON object")
                        reply = self._handler(parsed)
                    except (ValueError, KeyError) as exc:
                        reply = {"ok": False, "error": str(exc)}
                    conn.sendall(json.dumps(reply, sort_keys=True).encode() + b"\n")
                except OSError:
                    continue

    def close(self) -> None:
        """Stop serving and remove the socket file."""
        self._stop.set()
        self._sock.close()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def _read_line(conn: socket.socket) -> bytes:
    data = b""
    while b"\n" not in data and len(data) < REQUEST_LIMIT:
        chunk = conn.recv(1024)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0]


def request(path: str, message: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """Send one request to a running daemon's status socket; OSError if none listens."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(json.dumps(message).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    reply = json.loads(data)
    if not isinstance(reply, dict):
        raise ValueError("status reply is not a JSON object")
    return reply
