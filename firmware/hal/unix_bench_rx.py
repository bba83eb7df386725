# The bench radio's receive windows (see firmware/hal/unix_bench.py for the
# line formats): the TX lines a node hears in them. Loaded only around
# receive windows, so that a node's heap does not carry it otherwise; a
# bridge's side of the lines is firmware.hal.unix_bench_bridge.

import time

from firmware.hal.unix_inputs import LineSource


def held_wait(hal, poll, real_ms):
    """poll() every 2 real ms until it gives a value or real_ms pass, the node's clock held.

    A gateway answers in real milliseconds, a bench node may run its clock
    thousands of times faster: while a receive window waits here the
    simulated clock stands still (the real time waited is taken out of it).
    """
    start = time.time_ns()
    try:
        while True:
            got = poll()
            if got is not None or (time.time_ns() - start) // 1000000 >= real_ms:
                return got
            time.sleep_ms(2)
    finally:
        if hal.scale:               # a stepped clock (time_scale 0) stands still anyway
            hal.t0_ns += time.time_ns() - start


def _next_tx(radio):
    # (start_ms, freq_hz, sf, payload) of the next TX line, or None for now.
    if radio.pending is not None:
        item = radio.pending
        radio.pending = None
        return item
    if radio.rx_lines is None:
        if radio.rx_path is None:
            return None
        radio.rx_lines = LineSource(radio.rx_path)
    while True:
        line = radio.rx_lines.readline()
        if line is None:
            return None
        parts = line.split()
        try:
            if len(parts) != 5 or parts[0] != "TX":
                raise ValueError
            return int(parts[1]), int(parts[2]), int(parts[3]), bytes.fromhex(parts[4])
        except ValueError:
            radio.bad_lines += 1


def window(radio, open_ms, freq_hz, sf, preamble_ms):
    """The payload a receive window opening at bench time `open_ms` hears, or None.

    Heard: a TX line on this channel and SF whose start lies within the
    preamble time after the window opens. Earlier lines were not heard
    (counted), a later one is kept for the next window. While nothing is
    heard the node may wait up to bench rx_wait_real_ms of real time for a
    line to appear, its clock held (held_wait).
    """
    found = []

    def poll():
        while True:
            item = _next_tx(radio)
            if item is None:
                return None
            start_ms, freq, lsf, payload = item
            if start_ms > open_ms + preamble_ms:
                radio.pending = item
                found.append(None)
                return True
            if start_ms < open_ms or freq != freq_hz or lsf != sf:
                radio.not_heard += 1
                continue
            found.append(payload)   # a node needs no more than the bytes
            return True

    wait = radio.hal.bench.get("rx_wait_real_ms", 0)
    if poll() is None and wait:
        held_wait(radio.hal, poll, wait)
    return found[0] if found else None
