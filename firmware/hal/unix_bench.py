# The bench radio, loaded on first use so that only LoRa nodes and the radio
# bridge carry it. See firmware/hal/unix.py for the line format.

from firmware.hal.unix_inputs import LineSource


class BenchPacket(bytearray):
    """A received packet with the metadata of micropython-lib's lora.RxPacket."""

    def __init__(self, payload, rssi, snr, freq_hz=None, sf=None):
        super().__init__(payload)
        self.rssi = rssi            # dBm
        self.snr = snr              # dB * 4, as lora.RxPacket
        self.valid_crc = True
        self.freq_hz = freq_hz      # the bench line's channel (None: not given)
        self.sf = sf


class BenchRadio:
    """A LoRa modem stand-in: send()/recv() like lora.SyncModem, over a text file.

    Each packet is one line "RX <rssi_dbm> <snr_db> <hex> [<freq_hz> <sf>]". A
    transmitting node appends lines (with the bench "radio_rssi_dbm"/"radio_snr_db"
    values, as a receiver next to it would hear them, and the channel and SF it
    sent on), so its radio file can be fed straight to a radio_bridge node.
    """

    def __init__(self, hal, path, bench):
        self.hal = hal
        self.path = path
        self.rssi = bench.get("radio_rssi_dbm", -80)
        self.snr_db = bench.get("radio_snr_db", 9.0)
        self.lines = None
        self.bad_lines = 0
        self.freq_hz = None
        self.sf = None

    def configure(self, lora_cfg):
        """Take the keys given (freq_khz, sf), as lora's configure() does."""
        if "freq_khz" in lora_cfg:
            self.freq_hz = lora_cfg["freq_khz"] * 1000
        if "sf" in lora_cfg:
            self.sf = lora_cfg["sf"]

    def send(self, packet, tx_at_ms=None):
        """Append one packet line; returns ticks_ms at the end, as SyncModem.send."""
        with open(self.path, "a") as handle:
            line = "RX %d %s %s" % (self.rssi, self.snr_db, bytes(packet).hex())
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
            if len(parts) not in (4, 6) or parts[0] != "RX":
                raise ValueError
            rssi = int(parts[1])
            snr_x4 = round(float(parts[2]) * 4)
            payload = bytes.fromhex(parts[3])
            freq_hz = int(parts[4]) if len(parts) == 6 else None
            sf = int(parts[5]) if len(parts) == 6 else None
        except ValueError:
            self.bad_lines += 1
            return None
        return BenchPacket(payload, rssi, snr_x4, freq_hz, sf)
