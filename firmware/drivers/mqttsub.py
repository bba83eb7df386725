# A minimal MQTT 3.1.1 subscriber over a TCP socket: enough for a display
# node that follows one retained topic. References are sections of the OASIS
# standard "MQTT Version 3.1.1" (2014).
#
# Why not micropython-lib's umqtt.simple: its check_msg() switches the socket
# to non-blocking and then reads the rest of a packet blocking, so a packet
# split by the network stalls the node's loop (and its LED transitions) for
# as long as the broker takes; it has no keepalive of its own and no
# reconnection. This client is one code path on the board and on the bench
# (the unix port has no micropython-lib): a pure packet reader that resumes
# after a partial packet (feed), a state enum, and capped, jittered
# reconnection backoff. It never publishes, subscribes at QoS 1 and answers
# QoS 1 PUBLISHes with PUBACK.
#
#   DOWN --connect ok, CONNECT sent--> CONNECTING --CONNACK 0--> SUBSCRIBING
#   SUBSCRIBING --SUBACK--> UP;  any error or a silent broker --> DOWN (backoff)

try:
    from micropython import const
except ImportError:  # CPython (tests, type checks): const(x) is x
    def const(x):
        return x

DOWN = const(0)
CONNECTING = const(1)
SUBSCRIBING = const(2)
UP = const(3)
STATE_NAMES = ("down", "connecting", "subscribing", "up")

# Fixed-header packet types (section 2.2.1, table 2.1), upper nibble of byte 0
_CONNACK = const(2)
_PUBLISH = const(3)
_PUBACK = const(4)
_SUBACK = const(9)
_PINGRESP = const(13)

# errno values of "nothing waiting" on a non-blocking socket: EAGAIN on Linux
# (= EWOULDBLOCK), 11 also on lwIP (ESP32, RP2); 35 is EAGAIN on macOS/BSD hosts.
_EAGAIN = (11, 35)

_BACKOFF_MIN_MS = const(1000)
_BACKOFF_MAX_MS = const(60000)
_READ_MAX = const(512)          # bytes taken from the socket per read


class PacketReader:
    """Splits a byte stream into MQTT packets (section 2.2: fixed header).

    feed(data, on_packet) calls on_packet(ptype, flags, body) for every whole
    packet, body a memoryview into a preallocated buffer (valid during the
    call only). A packet longer than the buffer is skipped, counted in
    `oversized`; reading resumes with the next packet.
    """

    def __init__(self, max_packet):
        self.buf = bytearray(max_packet)
        self.view = memoryview(self.buf)
        self.oversized = 0
        self.reset()

    def reset(self):
        """Forget a partial packet (a new connection starts a new stream)."""
        self._head = -1         # byte 0 of the packet being read; -1 = none yet
        self._length = 0        # remaining length (section 2.2.3), being decoded
        self._shift = 0
        self._need = -1         # body bytes still wanted; -1 = length not complete
        self._have = 0
        self._skip = False

    def feed(self, data, on_packet):
        """Consume `data`, calling on_packet for each complete packet."""
        i = 0
        n = len(data)
        while i < n:
            if self._head < 0:
                self._head = data[i]
                self._length = 0
                self._shift = 0
                self._need = -1
                i += 1
                continue
            if self._need < 0:
                # Remaining length: 7 bits a byte, low first, at most 4 bytes (2.2.3)
                byte = data[i]
                i += 1
                self._length |= (byte & 0x7F) << self._shift
                self._shift += 7
                if byte & 0x80:
                    if self._shift >= 28:
                        raise ValueError("mqtt: remaining length over 4 bytes")
                    continue
                self._need = self._length
                self._have = 0
                self._skip = self._length > len(self.buf)
                if self._skip:
                    self.oversized += 1
            take = n - i
            if take > self._need:
                take = self._need
            if take and not self._skip:
                self.buf[self._have:self._have + take] = data[i:i + take]
            self._have += take
            self._need -= take
            i += take
            if self._need == 0:
                head = self._head
                self._head = -1
                self._need = -1
                if not self._skip:
                    on_packet(head >> 4, head & 0x0F, self.view[:self._have])


def _length_bytes(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return out


def _string(text):
    raw = text.encode() if isinstance(text, str) else bytes(text)
    return bytes((len(raw) >> 8, len(raw) & 0xFF)) + raw


def connect_packet(client_id, keepalive_s, user=None, password=None):
    """CONNECT (section 3.1): protocol level 4, clean session."""
    flags = 0x02                                    # clean session (3.1.2.4)
    payload = _string(client_id)
    if user is not None:
        flags |= 0x80
        payload += _string(user)
        if password is not None:
            flags |= 0x40
            payload += _string(password)
    body = _string("MQTT") + bytes((4, flags, keepalive_s >> 8, keepalive_s & 0xFF)) + payload
    return bytes((0x10,)) + _length_bytes(len(body)) + body


def subscribe_packet(packet_id, topic, qos=1):
    """SUBSCRIBE (section 3.8): one topic filter; the fixed header's flags are 0b0010."""
    body = bytes((packet_id >> 8, packet_id & 0xFF)) + _string(topic) + bytes((qos,))
    return bytes((0x82,)) + _length_bytes(len(body)) + body


PINGREQ = b"\xc0\x00"       # section 3.12
DISCONNECT = b"\xe0\x00"    # section 3.14


class Subscriber:
    """Follows one topic filter; on_message(topic_bytes, payload_memoryview) per PUBLISH.

    step(now_ms) does what is due without blocking on the broker: (re)connects
    after the backoff, reads what the socket holds, pings within the keepalive.
    `ticks_diff(a, b)` and `random_below(n)` come from the HAL.
    """

    def __init__(self, host, port, client_id, topic, on_message, ticks_diff, random_below,
                 keepalive_s=60, user=None, password=None, max_packet=4096, log=None):
        self.host = host
        self.port = port
        self.client_id = client_id
        self.topic = topic
        self.on_message = on_message
        self.ticks_diff = ticks_diff
        self.random_below = random_below
        self.keepalive_ms = keepalive_s * 1000
        self.keepalive_s = keepalive_s
        self.user = user
        self.password = password
        self.log = log
        self.reader = PacketReader(max_packet)
        # The receive buffer, allocated once here (at boot): sock.recv(n) allocated n
        # bytes per call, and on a fragmented heap that MemoryError came with a packet
        # waiting, so a long-running node stopped hearing its topic.
        self.rx = bytearray(_READ_MAX)
        self.rx_view = memoryview(self.rx)
        self.state = DOWN
        self.sock = None
        self._readinto = None
        self.poller = None
        self.backoff_ms = 0           # the first attempt is at once
        self.retry_ref = 0
        self.last_rx = 0
        self.last_tx = 0
        self.messages = 0
        self.connects = 0
        self.drops = 0

    def _say(self, text):
        if self.log is not None:
            self.log("mqtt: " + text)

    def _send(self, data, now_ms):
        self._write(data)
        self.last_tx = now_ms

    def _write(self, data):
        # The socket is non-blocking once connected; our packets are a few dozen bytes
        # and a socket buffer that cannot take them means a dead connection.
        sent = self.sock.send(data)
        if sent is not None and sent != len(data):
            raise OSError("send: %d of %d bytes taken" % (sent or 0, len(data)))

    def _read(self):
        """Bytes read into self.rx (0: closed by the broker; -1: nothing waiting).

        Non-blocking: on MicroPython readinto on a blocking socket waits until the
        whole buffer is full. MicroPython returns None when nothing is waiting;
        CPython (the host tests) has recv_into and raises on EAGAIN instead.
        """
        try:
            n = self._readinto(self.rx)
        except OSError as exc:
            if exc.args and exc.args[0] in _EAGAIN:
                return -1
            raise
        return -1 if n is None else n

    def _open(self, now_ms):
        import select
        import socket

        addr = socket.getaddrinfo(self.host, self.port)[0][-1]
        sock = socket.socket()
        self.sock = sock
        try:
            sock.settimeout(5)
        except (AttributeError, OSError):
            pass
        sock.connect(addr)
        sock.setblocking(False)         # reads into self.rx take only what is there
        self._readinto = getattr(sock, "readinto", None)
        if self._readinto is None:      # CPython's socket (the host tests)
            self._readinto = sock.recv_into  # type: ignore[attr-defined]
        self.poller = select.poll()
        self.poller.register(sock, select.POLLIN)
        self.reader.reset()
        self.state = CONNECTING
        self.last_rx = now_ms
        self._send(connect_packet(self.client_id, self.keepalive_s, self.user, self.password),
                   now_ms)

    def close(self, reason=None):
        """Drop the connection; the next step reconnects after a jittered, capped backoff."""
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        if self.state == UP or reason is not None:
            self.drops += 1
            self._say("down (%s), retry in %d ms" % (reason, self.backoff_ms))
        self.sock = None
        self._readinto = None
        self.poller = None
        self.state = DOWN

    def _fail(self, reason, now_ms):
        # Capped exponential backoff with full jitter over its upper half.
        base = self.backoff_ms * 2 if self.backoff_ms else _BACKOFF_MIN_MS
        if base > _BACKOFF_MAX_MS:
            base = _BACKOFF_MAX_MS
        self.backoff_ms = base // 2 + self.random_below(base // 2 + 1)
        self.retry_ref = now_ms
        self.close(reason)

    def _packet(self, ptype, flags, body):
        if ptype == _PUBLISH:
            # Section 3.3: topic name, packet id when QoS > 0, payload
            tlen = (body[0] << 8) | body[1]
            topic = bytes(body[2:2 + tlen])
            pos = 2 + tlen
            qos = (flags >> 1) & 3
            if qos:
                packet_id = body[pos:pos + 2]
                pos += 2
                # PUBACK (3.4) for QoS 1; QoS 2 is never granted (we ask for 1)
                self._write(bytes((0x40, 2)) + bytes(packet_id))
            self.messages += 1
            self.on_message(topic, body[pos:])
        elif ptype == _CONNACK:
            code = body[1] if len(body) > 1 else 255
            if code != 0:
                raise OSError("connection refused, return code %d" % code)
            self.state = SUBSCRIBING
            self._write(subscribe_packet(1, self.topic))
        elif ptype == _SUBACK:
            if len(body) < 3 or body[2] == 0x80:
                raise OSError("subscription to %s refused" % self.topic)
            self.state = UP
            self.connects += 1
            self.backoff_ms = 0
            self._say("up, following " + self.topic)
        # PINGRESP and anything else: only the receive time matters

    def step(self, now_ms):
        """Do what is due; returns ms until the client wants to run again."""
        if self.state == DOWN:
            wait = self.backoff_ms - self.ticks_diff(now_ms, self.retry_ref)
            if wait > 0:
                return wait
            try:
                self._open(now_ms)
            except OSError as exc:
                self._fail("connect: %s" % exc, now_ms)
                return self.backoff_ms
        try:
            while self.sock is not None and self.poller.poll(0):
                n = self._read()
                if n < 0:
                    break
                if n == 0:
                    raise OSError("closed by the broker")
                self.last_rx = now_ms
                self.reader.feed(self.rx_view[:n], self._packet)
                if n < _READ_MAX:
                    break
            silent = self.ticks_diff(now_ms, self.last_rx)
            # Section 3.1.2.10: the server drops a client silent for 1.5 keepalives;
            # a broker silent that long (no PINGRESP) is gone.
            if silent > self.keepalive_ms + self.keepalive_ms // 2:
                raise OSError("no answer for %d ms" % silent)
            quiet = self.ticks_diff(now_ms, self.last_tx)
            if self.state == UP and quiet >= self.keepalive_ms // 2:
                self._send(PINGREQ, now_ms)
        except (OSError, ValueError, IndexError) as exc:
            self._fail(str(exc), now_ms)
            return self.backoff_ms
        return self.keepalive_ms // 2
