# Radio bridge: a LoRa board plugged into the gateway by USB. Every packet it
# hears goes to the gateway as a RADIO record (protocol.stream.pack_radio:
# RSSI, SNR x10, frequency, SF, then the packet) on the UART link.
#
# The bridge holds no keys and decrypts nothing; with bridge.check_header it
# drops packets whose header is not a knute frame (other LoRa traffic on the
# channel), counting them.
#
# A board's single LoRa radio listens on radio.freq_hz only (eight channels at
# once take a concentrator: docs/operations.md). The bench radio hears lines of
# every channel: those on a channel outside radio.channels are dropped, and the
# RADIO record names the channel and SF each packet came on.
#
# Downlinks (docs/protocol.md sections 6 and 12.6): the gateway writes TX
# records (protocol.stream.pack_tx) to the bridge, which transmits each one at
# its `at_ms`, or, for at_ms 0, in the receive window of the last uplink it
# heard from the device the downlink addresses: RX1 (1 s after that uplink's
# end, on the channel and SF that uplink came on) or RX2 (2 s after,
# 869.525 MHz SF12), as the record's frequency and SF say. It transmits
# nothing else; the gateway keeps the duty cycle of what it asks for.

try:
    from micropython import const
except ImportError:  # CPython (type checks, host tools): const(x) is x
    const = int

from protocol import frame, stream
from protocol.errors import FrameError

_RX_TIMEOUT_MS = const(500)  # longest recv blocks before the loop runs again (feeds the WDT)
_BURST = const(16)           # packets forwarded per poll before the loop runs again
_HEARD_MAX = const(64)       # devices whose last uplink time the bridge remembers
_RX2_FREQ_HZ = const(869525000)
_RX2_SF = const(12)


class Node:
    """The radio_bridge role."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.cfg = ctx.config["bridge"]
        radio = ctx.config["radio"]
        self.freq_hz = radio["freq_hz"]
        self.sf = radio["sf"]
        self.channels = radio["channels"]
        self.check_header = self.cfg["check_header"]
        self.modem = None
        self.heard = 0
        self.forwarded = 0
        self.dropped = 0
        self.link_errors = 0
        self.next_stats = 0
        # device id -> (board ms at the end, freq_hz, sf) of its last uplink
        self.heard_at = {}
        self.records = None         # protocol.stream_decode.StreamDecoder, on the first byte
        self.sent = 0               # TX records transmitted
        self.tx_dropped = 0         # TX records that could not be placed or were bad

    def start(self):
        """Open the radio receiver."""
        self.modem = self.ctx.hal.lora_modem(self.ctx.config["radio"])
        self.next_stats = self.ctx.hal.time() + self.cfg["stats_s"]
        self.ctx.log("radio_bridge: listening on %d Hz SF%d (channels %s)"
                     % (self.freq_hz, self.sf, " ".join([str(f) for f in self.channels])))

    def forward(self, packet):
        """Hand one received packet (lora.RxPacket-like) to the gateway; True if sent."""
        self.heard += 1
        freq_hz = getattr(packet, "freq_hz", None) or self.freq_hz
        sf = getattr(packet, "sf", None) or self.sf
        if freq_hz not in self.channels and freq_hz != self.freq_hz:
            self.dropped += 1
            return False
        if self.check_header:
            try:
                frame.parse_header(packet)
            except FrameError:
                self.dropped += 1
                return False
        end_ms = getattr(packet, "end_ms", None)
        if len(packet) >= 5:
            if len(self.heard_at) >= _HEARD_MAX:
                self.heard_at.clear()    # rare: a crowded channel; windows are short anyway
            if end_ms is None:
                end_ms = self.ctx.hal.time_ms()
            self.heard_at[int.from_bytes(packet[1:5], "big")] = (end_ms, freq_hz, sf)
        rssi = packet.rssi if packet.rssi is not None else 0
        snr_x4 = packet.snr if packet.snr is not None else 0
        # lora.RxPacket gives SNR in dB * 4; the RADIO record carries dB * 10.
        # rounded half away from zero
        snr_x10 = (snr_x4 * 10 + 2) // 4 if snr_x4 >= 0 else -((2 - snr_x4 * 10) // 4)
        body = stream.pack_radio(rssi, snr_x10, freq_hz, sf, packet)
        if self.ctx.link.write_record(stream.REC_RADIO, body):
            self.forwarded += 1
            return True
        self.link_errors += 1
        return False

    def poll(self, now_ms):
        """Forward what the radio heard; ms until the loop should call again."""
        got = 0
        while got < _BURST:
            packet = self.modem.recv(_RX_TIMEOUT_MS)
            if packet is None:
                break
            self.forward(packet)
            got += 1
        port = self.ctx.link.port
        if port.any():
            self.serve(port.read(256))
        now = self.ctx.hal.time()
        if now >= self.next_stats:
            self.next_stats = now + self.cfg["stats_s"]
            self.ctx.log("radio_bridge: heard=%d forwarded=%d dropped=%d link_errors=%d "
                         "sent=%d tx_dropped=%d" % (self.heard, self.forwarded, self.dropped,
                                                    self.link_errors, self.sent,
                                                    self.tx_dropped))
        # recv() has already waited for packets: run again at once, never sleep
        # (a bridge is powered by the gateway's USB port).
        return 0

    def serve(self, data):
        """Read link bytes from the gateway; transmit each TX record in them."""
        if not data:
            return
        from protocol import stream_decode

        if self.records is None:
            self.records = stream_decode.StreamDecoder()
        for item in self.records.feed(data):
            if isinstance(item, Exception) or item[0] != stream.REC_TX:
                continue
            try:
                at_ms, freq, sf, payload = stream_decode.unpack_tx(item[1])
            except FrameError:
                self.tx_dropped += 1
                continue
            self.transmit(at_ms, freq, sf, payload)

    def transmit(self, at_ms, freq_hz, sf, payload):
        """Transmit one downlink at `at_ms` (0: the addressed device's window); True if sent."""
        if at_ms == 0:
            last = self.heard_at.get(int.from_bytes(payload[1:5], "big")) \
                if len(payload) >= 5 else None
            if last is None:
                self.tx_dropped += 1        # never heard that device: no window to use
                return False
            end, up_freq, up_sf = last
            if freq_hz == _RX2_FREQ_HZ and sf == _RX2_SF:
                at_ms = end + 2000
            elif freq_hz == up_freq and sf == up_sf:
                at_ms = end + 1000          # RX1: the uplink's own channel (the node hops)
            else:
                self.tx_dropped += 1        # neither RX1's channel and SF nor RX2's
                return False
        modem = self.modem
        try:
            if hasattr(modem, "rx_path"):       # the bench radio: a TX line
                from firmware.hal import unix_bench_bridge

                unix_bench_bridge.transmit_at(modem, at_ms, freq_hz, sf, payload)
            else:
                wait = at_ms - self.ctx.hal.time_ms()
                if wait > 0:
                    self.ctx.hal.sleep_ms(wait)
                modem.configure({"freq_khz": freq_hz // 1000, "sf": sf})
                try:
                    modem.send(payload)
                finally:
                    modem.configure({"freq_khz": self.freq_hz // 1000, "sf": self.sf})
        except OSError:
            self.tx_dropped += 1
            return False
        self.sent += 1
        return True

    def status(self):
        """Counters for the console and bench tools."""
        return {"heard": self.heard, "forwarded": self.forwarded, "dropped": self.dropped,
                "link_errors": self.link_errors, "sent": self.sent,
                "tx_dropped": self.tx_dropped}
