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

class BenchRadio:
    """A LoRa modem stand-in: send()/recv() like lora.SyncModem, over text files.

    Each packet is one line (docs/firmware.md, "The bench radio"):
    "RX <rssi_dbm> <snr_db> <hex> <end_ms> <freq_hz> <sf>". A transmitting node
    appends lines (with the bench "radio_rssi_dbm"/"radio_snr_db" values, as a
    receiver next to it would hear them, the end of the transmission in its
    bench clock, and the channel and SF it sent on), so its radio file can be
    fed straight to a radio_bridge node. Older lines without the end time
    and/or the channel still parse. A receive window's TX lines are
    firmware.hal.unix_bench_rx's, a bridge's RX and TX lines
    firmware.hal.unix_bench_bridge's, each loaded only by nodes that use them.
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

        Like SyncModem.recv. In firmware.hal.unix_bench_bridge, which a node
        that only sends never loads.
        """
        from firmware.hal import unix_bench_bridge

        return unix_bench_bridge.recv(self, timeout_ms)
