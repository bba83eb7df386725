# Radio bridge: a LoRa board plugged into the gateway by USB. Every packet it
# hears goes to the gateway as a RADIO record (protocol.stream.pack_radio:
# RSSI, SNR x10, frequency, SF, then the packet) on the UART link.
#
# The bridge holds no keys and decrypts nothing; with bridge.check_header it
# drops packets whose header is not a knute frame (other LoRa traffic on the
# channel), counting them. It never transmits, so it has no duty cycle.
#
# A board's single LoRa radio listens on radio.freq_hz only (eight channels at
# once take a concentrator: docs/operations.md). The bench radio hears lines of
# every channel: those on a channel outside radio.channels are dropped, and the
# RADIO record names the channel and SF each packet came on.

try:
    from micropython import const
except ImportError:  # CPython (type checks, host tools): const(x) is x
    const = int

from protocol import frame, stream
from protocol.errors import FrameError

_RX_TIMEOUT_MS = const(500)  # longest recv blocks before the loop runs again (feeds the WDT)
_BURST = const(16)           # packets forwarded per poll before the loop runs again


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
        now = self.ctx.hal.time()
        if now >= self.next_stats:
            self.next_stats = now + self.cfg["stats_s"]
            self.ctx.log("radio_bridge: heard=%d forwarded=%d dropped=%d link_errors=%d"
                         % (self.heard, self.forwarded, self.dropped, self.link_errors))
        # recv() has already waited for packets: run again at once, never sleep
        # (a bridge is powered by the gateway's USB port).
        return 0

    def status(self):
        """Counters for the console and bench tools."""
        return {"heard": self.heard, "forwarded": self.forwarded, "dropped": self.dropped,
                "link_errors": self.link_errors}
