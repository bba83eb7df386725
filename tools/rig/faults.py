"""A TCP relay that misbehaves on request: the broker's link as the field sees it.

``FaultyLink`` sits between a gateway (or any MQTT client) and a broker and can
pass bytes, refuse connections, swallow every PUBLISH unacknowledged, or drop
connections at random (a reconnect storm). Tests, the demo and the reliability
benchmark use it to put faults on the uplink.
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """Exactly ``n`` bytes from ``sock``; ConnectionError if it closes first."""
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def read_mqtt_packet(sock: socket.socket) -> tuple[int, bytes]:
    """One MQTT control packet: (first byte, body). ConnectionError at EOF."""
    first = recv_exact(sock, 1)[0]
    length = 0
    shift = 0
    for _ in range(4):
        byte = recv_exact(sock, 1)[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return first, recv_exact(sock, length) if length else b""


class FaultyLink:
    """A TCP relay between the gateway and the broker that misbehaves on request.

    Modes: ``relay`` (pass bytes both ways), ``down`` (accept, then reset at
    once: the broker is gone), ``blackhole`` (answer CONNECT with CONNACK and
    PINGREQ with PINGRESP, swallow every PUBLISH: a broker that never sends
    PUBACK), ``flap`` (answer CONNECT with CONNACK, then reset the connection
    when the first PUBLISH arrives, before acknowledging anything: a broker
    node failing over in a cluster, which accepts connections and drops
    them while the cluster reorganizes; counted in ``flaps``), ``storm``
    (relay, but drop each connection after ``storm_s`` = (lo, hi) seconds).
    ``set_mode`` drops the current connections, so the gateway meets the new
    behaviour at its next connect.
    """

    def __init__(self, target: tuple[str, int], *, storm_s: tuple[float, float] = (0.5, 3.0),
                 seed: int = 1) -> None:
        self.target = target
        self.mode = "relay"
        self.storm_s = storm_s
        self.connections = 0
        self.swallowed = 0
        self.flaps = 0
        self._rng = random.Random(seed)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, name="faulty-link", daemon=True).start()

    def set_mode(self, mode: str) -> None:
        """Switch behaviour and drop every open connection."""
        if mode not in ("relay", "down", "blackhole", "flap", "storm"):
            raise ValueError(mode)
        self.mode = mode
        self.drop()

    def drop(self) -> None:
        """Reset every open connection."""
        with self._lock:
            conns, self._conns = self._conns, []
        _reset_all(*conns)

    def close(self) -> None:
        """Stop listening and drop everything."""
        self._closed = True
        self.drop()
        with contextlib.suppress(OSError):
            self._listener.close()

    def _track(self, *socks: socket.socket) -> None:
        with self._lock:
            self._conns.extend(socks)

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            mode = self.mode
            if mode == "down":
                _reset(conn)
                continue
            if mode in ("blackhole", "flap"):
                self._track(conn)
                threading.Thread(target=self._blackhole, args=(conn, mode == "flap"),
                                 daemon=True).start()
                continue
            try:
                up = socket.create_connection(self.target, timeout=5)
                up.settimeout(None)
            except OSError:
                _reset(conn)
                continue
            self._track(conn, up)
            for a, b in ((conn, up), (up, conn)):
                threading.Thread(target=pump, args=(a, b), daemon=True).start()
            if mode == "storm":
                life = self._rng.uniform(*self.storm_s)
                timer = threading.Timer(life, _reset_all, args=(conn, up))
                timer.daemon = True
                timer.start()

    def _blackhole(self, conn: socket.socket, flap: bool = False) -> None:
        """Play a broker that takes no PUBLISH: swallow each one, or (``flap``) reset
        the connection at the first."""
        try:
            while True:
                first, body = read_mqtt_packet(conn)
                ptype = first >> 4
                if ptype == 1:                       # CONNECT
                    level = body[6] if len(body) > 6 else 4
                    conn.sendall(b"\x20\x03\x00\x00\x00" if level == 5 else b"\x20\x02\x00\x00")
                elif ptype == 12:                    # PINGREQ
                    conn.sendall(b"\xd0\x00")
                elif ptype == 3 and flap:            # PUBLISH: drop the connection
                    self.flaps += 1
                    break
                elif ptype == 3:                     # PUBLISH: never acknowledged
                    self.swallowed += 1
                elif ptype == 14:                    # DISCONNECT
                    break
        except (OSError, ConnectionError, IndexError):
            pass
        _reset(conn)



def pump(src: socket.socket, dst: socket.socket, *, close: bool = False) -> None:
    """Copy `src` to `dst` until either ends, then shut both down (and close them).

    FaultyLink keeps its sockets open after a pump (it resets the ones it
    tracks); a relay that tracks nothing closes them.
    """
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    for s in (src, dst):
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
        if close:
            with contextlib.suppress(OSError):
                s.close()


def _reset_all(*socks: socket.socket) -> None:
    """Close connections with RST (SO_LINGER 0): each peer sees its connection reset, as
    after a crash.

    A ``pump`` thread blocked in ``recv`` on a socket holds the kernel's socket open past
    ``close``: the RST left only when the next byte came, so an idle connection (an MQTT
    client between keepalives) stayed up for seconds after a "reset". Each socket is
    closed, all of them first, through a duplicate descriptor kept until after
    ``shutdown(SHUT_RD)``, which sends nothing but wakes that ``recv``; the woken pump
    finds both of its sockets closed already, so no FIN goes out ahead of a RST."""
    twins: list[socket.socket] = []
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                            b"\x01\x00\x00\x00\x00\x00\x00\x00")
        try:
            twins.append(sock.dup())
        except OSError:                 # closed already
            continue
        with contextlib.suppress(OSError):
            sock.close()
    for twin in twins:
        with contextlib.suppress(OSError):
            twin.shutdown(socket.SHUT_RD)
        with contextlib.suppress(OSError):
            twin.close()


def _reset(sock: socket.socket) -> None:
    """Close one connection with RST (see ``_reset_all``)."""
    _reset_all(sock)
