# The bench radio, loaded on first use so that only LoRa nodes and the radio
# bridge carry it. The line formats (docs/firmware.md, "The bench"):
#
#   uplinks, appended to bench radio "path" by the node that sends them:
#     RX <rssi_dbm> <snr_db> <hex> <end_ms>
#   packets sent to the node, appended to its "rx_path" by whoever transmits:
#     TX <start_ms> <freq_hz> <sf> <hex>
#
# end_ms and start_ms are the receiving node's bench clock (board time, unix
# milliseconds); old 4-field RX lines, without end_ms, still parse.

from firmware.hal.unix_inputs import LineSource


class BenchPacket(bytearray):
    """A received packet with the metadata of micropython-lib's lora.RxPacket."""

    def __init__(self, payload, rssi, snr, end_ms=None):
        super().__init__(payload)
        self.rssi = rssi            # dBm
        self.snr = snr              # dB * 4, as lora.RxPacket
        self.valid_crc = True
        self.end_ms = end_ms        # the sender's bench clock at the end (None: unknown)


class BenchRadio:
    """A LoRa modem stand-in: send()/recv() like lora.SyncModem, over text files.

    A transmitting node appends RX lines (with the bench "radio_rssi_dbm" /
    "radio_snr_db" values, as a receiver next to it would hear them), so its
    radio file can be fed straight to a radio_bridge node. The TX lines (a
    receive window, a bridge's transmission) are firmware.hal.unix_bench_rx's,
    loaded only by nodes that use them.
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

    def send(self, packet, tx_at_ms=None):
        """Append one packet line; returns ticks_ms at the end, as SyncModem.send."""
        self.end_ms = self.hal.time_ms()    # the transmission's end, as the line says
        with open(self.path, "a") as handle:
            handle.write("RX %d %s %s %d\n" % (self.rssi, self.snr_db, bytes(packet).hex(),
                                               self.end_ms))
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
            if len(parts) not in (4, 5) or parts[0] != "RX":
                raise ValueError
            rssi = int(parts[1])
            snr_x4 = round(float(parts[2]) * 4)
            payload = bytes.fromhex(parts[3])
            end_ms = int(parts[4]) if len(parts) == 5 else None
        except ValueError:
            self.bad_lines += 1
            return None
        return BenchPacket(payload, rssi, snr_x4, end_ms)
