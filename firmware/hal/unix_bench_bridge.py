# The radio bridge's side of the bench radio (see firmware/hal/unix_bench.py
# for the line formats): the RX lines it hears (BenchRadio.recv) and the TX
# lines it transmits. Loaded only by a bridge: a node that sends never
# carries it.

from firmware.hal.unix_inputs import LineSource


class BenchPacket(bytearray):
    """A received packet with the metadata of micropython-lib's lora.RxPacket."""

    def __init__(self, payload, rssi, snr, freq_hz=None, sf=None, end_ms=None):
        super().__init__(payload)
        self.rssi = rssi            # dBm
        self.snr = snr              # dB * 4, as lora.RxPacket
        self.valid_crc = True
        self.freq_hz = freq_hz      # the bench line's channel (None: not given)
        self.sf = sf
        self.end_ms = end_ms        # the sender's bench clock at the end (None: unknown)


def transmit_at(radio, start_ms, freq_hz, sf, payload):
    """Append "TX <start_ms> <freq_hz> <sf> <hex>" to the radio's rx_path."""
    with open(radio.rx_path, "a") as handle:
        handle.write("TX %d %d %d %s\n" % (start_ms, freq_hz, sf, bytes(payload).hex()))


def recv(radio, timeout_ms=None):
    """The next RX line of the radio's path as a BenchPacket (BenchRadio.recv).

    None after waiting up to timeout_ms: like SyncModem.recv, it blocks while
    nothing arrives (bounded by the bench poll interval, so the bench inputs
    stay responsive).
    """
    if radio.lines is None:
        radio.lines = LineSource(radio.path)
    line = radio.lines.readline()
    if line is None:
        nap = radio.hal.max_sleep_ms()
        if timeout_ms is not None and timeout_ms < nap:
            nap = timeout_ms
        radio.hal.sleep_ms(nap)
        return None
    parts = line.split()
    try:
        # 4: old; 5: + end_ms; 6: + freq_hz sf (no end_ms); 7: + end_ms freq_hz sf
        n = len(parts)
        if n < 4 or n > 7 or parts[0] != "RX":
            raise ValueError
        rssi = int(parts[1])
        snr_x4 = round(float(parts[2]) * 4)
        payload = bytes.fromhex(parts[3])
        end_ms = int(parts[4]) if n in (5, 7) else None
        freq_hz = int(parts[n - 2]) if n >= 6 else None
        sf = int(parts[n - 1]) if n >= 6 else None
    except ValueError:
        radio.bad_lines += 1
        return None
    return BenchPacket(payload, rssi, snr_x4, freq_hz, sf, end_ms)
