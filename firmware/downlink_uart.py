# The receive windows of a node on a serial link (docs/protocol.md 6, 12.6):
# the gateway writes the downlink as a FRAME record while they are open.
# Loaded by firmware.downlink_window after an uplink and dropped again after it.

try:
    from micropython import const
except ImportError:  # CPython (type checks, host tools): const(x) is x
    const = int

_UART_POLL_MS = const(20)
_MAX_RECORD = const(320)


def listen(link, hal, until_ms):
    """The body of a FRAME record read from a UART link before board time `until_ms`, or None.

    On the bench the node may also wait bench rx_wait_real_ms of real time,
    its clock held, for a gateway that answers in real milliseconds.
    """
    port = link.port
    buf = bytearray()
    got = []

    def poll():
        while port.any():
            chunk = port.read(64)
            if not chunk:
                break
            for byte in chunk:
                if byte:
                    if len(buf) < _MAX_RECORD:
                        buf.append(byte)
                elif buf:
                    body = _frame_body(bytes(buf))
                    buf[:] = b""
                    if body is not None:
                        got.append(body)
                        return body
        return None

    while hal.time_ms() < until_ms:
        if poll() is not None:
            return got[0]
        hal.sleep_ms(_UART_POLL_MS)
    wait = getattr(hal, "bench", {}).get("rx_wait_real_ms", 0)
    if poll() is None and wait:
        _held_wait(hal, poll, wait)
    return got[0] if got else None


def _held_wait(hal, poll, real_ms):
    # The bench only (unix HAL): poll() every 2 real ms for up to real_ms,
    # the node's clock held (as unix_bench_rx.held_wait).
    import time

    start = time.time_ns()
    try:
        while poll() is None and (time.time_ns() - start) // 1000000 < real_ms:
            time.sleep_ms(2)
    finally:
        if hal.scale:               # a stepped clock (time_scale 0) stands still anyway
            hal.t0_ns += time.time_ns() - start


def _frame_body(encoded):
    # One record's COBS and CRC-32 (protocol.stream, section 6), undone here in
    # a few lines instead of loading protocol.stream_decode: the FRAME body or None.
    from binascii import crc32

    raw = bytearray()
    i = 0
    n = len(encoded)
    while i < n:
        end = i + encoded[i]
        if end > n:
            return None
        raw.extend(encoded[i + 1:end])
        if encoded[i] != 0xFF and end < n:
            raw.append(0)
        i = end
    if len(raw) < 5 or raw[0] != 1:     # protocol.stream.REC_FRAME
        return None
    if crc32(raw[:-4]) & 0xFFFFFFFF != int.from_bytes(raw[-4:], "little"):
        return None
    return bytes(raw[1:-4])
