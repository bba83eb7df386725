# The bench radio, loaded on first use so that only LoRa nodes and the radio
# bridge carry it. The line formats (docs/firmware.md, "The bench"):
#
#   uplinks, appended to bench radio "path" by the node that sends them:
#     RX <rssi_dbm> <snr_db> <hex> <end_ms> <freq_hz> <sf>
#   packets sent to the node, appended to its "rx_path" by whoever transmits:
#     TX <start_ms> <freq_hz> <sf> <hex>
#
# end_ms and start_ms are the receiving node's bench clock (board time, unix
# milliseconds); freq_hz and sf are the channel and SF the uplink went out on.
# Older RX lines still parse: 4 fields (neither), 5 (end_ms only), 6 (freq_hz sf
# only).

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


class BenchRadio:
    """A LoRa modem stand-in: send()/recv() like lora.SyncModem, over text files.

    Each packet is one line (docs/firmware.md, "The bench radio"):
    "RX <rssi_dbm> <snr_db> <hex> <end_ms> <freq_hz> <sf>". A transmitting node
    appends lines (with the bench "radio_rssi_dbm"/"radio_snr_db" values, as a
    receiver next to it would hear them, the end of the transmission in its
    bench clock, and the channel and SF it sent on), so its radio file can be
    fed straight to a radio_bridge node. Older lines without the end time
    and/or the channel still parse. The TX lines (a receive window, a bridge's
    transmission) are firmware.hal.unix_bench_rx's, loaded only by nodes that
    use them.
    """

    def __init__(self, hal, path, bench, rx_path=None):
        self.hal = hal
        self.path = path
        self.rx_path = rx_path
        self.rssi = bench.get("radio_rssi_dbm", -80)
        self.snr_db = bench.get("radio_snr_db", 9.0)
        self.lines = None
        self.rx_lines = None        # TX lines of rx_path (unix_bench_rx)
        self.pending = None         # a TX line read for a later window
        self.bad_lines = 0
        self.not_heard = 0          # TX lines outside every window the node opened
        self.freq_hz = None
        self.sf = None
        self.end_ms = None

    def configure(self, lora_cfg):
        """Take the keys given (freq_khz, sf), as lora's configure() does."""
        if "freq_khz" in lora_cfg:
            self.freq_hz = lora_cfg["freq_khz"] * 1000
        if "sf" in lora_cfg:
            self.sf = lora_cfg["sf"]

    def send(self, packet, tx_at_ms=None):
        """Append one packet line; returns ticks_ms at the end, as SyncModem.send."""
        self.end_ms = self.hal.time_ms()    # the transmission's end, as the line says
        with open(self.path, "a") as handle:
            line = "RX %d %s %s %d" % (self.rssi, self.snr_db, bytes(packet).hex(), self.end_ms)
            if self.freq_hz is not None:
                line += " %d %d" % (self.freq_hz, self.sf)
            handle.write(line + "\n")
        return self.hal.ticks_ms()

    def recv(self, timeout_ms=None, rx_length=0xFF, rx_packet=None):
        """The next packet line as a BenchPacket; None after waiting up to timeout_ms.

        Like SyncModem.recv, it blocks while nothing arrives (bounded by the
        bench poll interval, so the bench inputs stay responsive).
        """
        if self.lines is None:
            self.lines = LineSource(self.path)
        line = self.lines.readline()
        if line is None:
            nap = self.hal.max_sleep_ms()
            if timeout_ms is not None and timeout_ms < nap:
                nap = timeout_ms
            self.hal.sleep_ms(nap)
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
            self.bad_lines += 1
            return None
        return BenchPacket(payload, rssi, snr_x4, freq_hz, sf, end_ms)
