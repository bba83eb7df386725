"""Live counters and the local status endpoint of a running gateway.

Counters: ``Counters`` (gateway.model) is a thread-safe bag of integer counters, global and per
source (received, accepted, merged, rejected by reason). The daemon combines
it with the spool's and the forwarder's stats into one status dict.

Endpoint: the daemon listens on a unix stream socket (``[status] socket``, mode
0660). A client sends one JSON request line and reads one JSON reply line:

    {"cmd": "status"}                     -> the status dict
    {"cmd": "reset-counter", "device": n} -> {"ok": true} once the pipeline forgot it
    {"cmd": "reload"}                     -> {"ok": true}; the registry is re-read
    {"cmd": "tap"}                        -> {"ok": true, "tap": true}, then one JSON
                                             line per frame until the client hangs up

A unix socket needs no port, cannot be reached from the network and is guarded
by file permissions; ``knute gateway status`` reads it.

Tap: ``Tap`` hands every frame the ingest loop decided on (accepted: its hex and
its MQTT reading; rejected: its hex and the reason) to the connected ``knute
gateway tap`` clients. ``publish`` costs one attribute test while nobody taps;
each client has its own bounded queue and thread, so a slow client loses lines
(and is told how many) instead of slowing the gateway.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import queue
import select
import socket
import threading
from collections.abc import Callable
from typing import Any

from knute.gateway.model import Counters as Counters  # re-exported: counted here for status

REQUEST_LIMIT = 4096
TAP_BACKLOG = 1000          # lines queued per tap client before it loses some


Handler = Callable[[dict[str, Any]], dict[str, Any]]


class _TapClient:
    """One ``knute gateway tap`` connection, written from its own thread."""

    def __init__(self, conn: socket.socket, tap: Tap) -> None:
        self.conn = conn
        self.tap = tap
        self.lines: queue.Queue[bytes | None] = queue.Queue(TAP_BACKLOG)
        self.dropped = 0
        self.thread = threading.Thread(target=self._serve, name="tap", daemon=True)

    def offer(self, line: bytes) -> None:
        try:
            self.lines.put_nowait(line)
        except queue.Full:
            self.dropped += 1

    def _hung_up(self) -> bool:
        if not select.select([self.conn], [], [], 0)[0]:
            return False
        try:
            return not self.conn.recv(1024)
        except OSError:
            return True

    def _serve(self) -> None:
        try:
            self.conn.settimeout(5.0)
            while True:
                try:
                    line = self.lines.get(timeout=0.5)
                except queue.Empty:
                    if self._hung_up():
                        return
                    continue
                if line is None:
                    return
                if self.dropped:
                    lost, self.dropped = self.dropped, 0
                    self.conn.sendall(json.dumps({"event": "dropped", "count": lost})
                                      .encode() + b"\n")
                self.conn.sendall(line)
        except OSError:
            return
        finally:
            self.tap.detach(self)
            with contextlib.suppress(OSError):
                self.conn.close()


class Tap:
    """Frames for ``knute gateway tap`` clients (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: list[_TapClient] = []

    @property
    def active(self) -> bool:
        """True while at least one client listens."""
        return bool(self._clients)

    def publish(self, event: dict[str, Any]) -> None:
        """Queue one event (a JSON object) for every client; never blocks."""
        if not self._clients:
            return
        line = json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            client.offer(line)

    def attach(self, conn: socket.socket) -> None:
        """Serve a connection that asked for the tap until it hangs up.

        The reply line goes first through the client's own queue: every frame
        published after it is on its way to the client.
        """
        client = _TapClient(conn, self)
        client.offer(b'{"ok": true, "tap": true}\n')
        with self._lock:
            self._clients.append(client)
        client.thread.start()

    def detach(self, client: _TapClient) -> None:
        """Forget a client (its thread calls this when it ends)."""
        with self._lock:
            if client in self._clients:
                self._clients.remove(client)

    def close(self) -> None:
        """End every client's connection."""
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            with contextlib.suppress(queue.Full):
                client.lines.put_nowait(None)
            with contextlib.suppress(OSError):
                client.conn.shutdown(socket.SHUT_RDWR)
        for client in clients:
            client.thread.join(timeout=2.0)


class StatusServer:
    """Serves JSON requests on a unix socket from its own thread."""

    def __init__(self, path: str, handler: Handler, tap: Tap | None = None) -> None:
        self.path = path
        self._handler = handler
        self.tap = tap
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        directory = os.path.dirname(path) or "."
        os.makedirs(directory, exist_ok=True)
        if _answers(path):
            # Another gateway serves this socket: taking it over would leave that one
            # unreachable (and removing it on our way out would too).
            raise OSError(errno.EADDRINUSE, "a running gateway answers on it")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)              # left behind by a gateway that was killed
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o117)
        try:
            self._sock.bind(path)
        except OSError:
            self._sock.close()
            raise
        finally:
            os.umask(old)
        self._inode = os.stat(path).st_ino
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
            handed_off = False
            try:
                conn.settimeout(5.0)
                request = _read_line(conn)
                try:
                    parsed = json.loads(request)
                    if not isinstance(parsed, dict):
                        raise ValueError("request must be a JSON object")
                    if parsed.get("cmd") == "tap" and self.tap is not None:
                        self.tap.attach(conn)
                        handed_off = True
                        continue
                    reply = self._handler(parsed)
                except (ValueError, KeyError) as exc:
                    reply = {"ok": False, "error": str(exc)}
                conn.sendall(json.dumps(reply, sort_keys=True).encode() + b"\n")
            except OSError:
                continue
            finally:
                if not handed_off:
                    conn.close()

    def close(self) -> None:
        """Stop serving and remove the socket file."""
        self._stop.set()
        # shutdown wakes the thread's accept() at once (close alone does not: the
        # thread would sleep out its 0.5 s timeout, and every stop would wait for it).
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        if self.tap is not None:
            self.tap.close()
        with contextlib.suppress(FileNotFoundError):
            if os.stat(self.path).st_ino == self._inode:     # still ours
                os.unlink(self.path)


def _answers(path: str) -> bool:
    """True if something accepts connections on the unix socket ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except OSError:
            return False
    return True


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
