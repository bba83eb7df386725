# The LoRa uplink: frames as LoRa packets (see firmware.link for the UART one).
#
# The LoRa modem comes from the HAL: on a board it is a micropython-lib `lora`
# driver (SX1262 / SX1276 with the lora-sync SyncModem send/recv API), on the
# unix port a bench radio that writes and reads packets as text lines. The
# `lora` package is imported only inside the board HAL, so the bench and type
# checks never need it. Only LoRa nodes load this module.

# Link states, the same as firmware.link's (that module stays unloaded here).
UP = "up"
DOWN = "down"


class LoraLink:
    """Frames as LoRa packets through a SyncModem-like object (send(packet))."""

    lora = True

    def __init__(self, modem, cfg):
        self.modem = modem
        self.freq_hz = cfg["freq_hz"]
        self.sf = cfg["sf"]
        self.bw_hz = cfg["bw_hz"]
        self.cr = cfg["cr"]
        self.preamble = cfg["preamble"]
        self.state = UP
        self.errors = 0

    def tune(self, freq_hz):
        """Move the transmitter to `freq_hz` (a channel of radio.channels) for the next send.

        freq_hz then names the channel the uplink goes out on: the receive
        windows after it listen there.
        """
        if freq_hz != self.freq_hz:
            # micropython-lib lora: configure() changes only the keys given.
            self.modem.configure({"freq_khz": freq_hz // 1000})
            self.freq_hz = freq_hz

    def time_on_air_ms(self, length, sf=None):
        """Computed time on air of a `length`-byte packet (this link's SF unless given)."""
        from firmware import dutycycle

        return dutycycle.time_on_air_ms(length, sf or self.sf, self.bw_hz, self.cr,
                                        self.preamble)

    def send(self, frame):
        """Transmit one packet and wait until it has left; False on a radio error."""
        try:
            self.modem.send(frame)
        except OSError:
            self.errors += 1
            self.state = DOWN
            return False
        self.state = UP
        return True

    def log(self, text):
        """Console lines never go on air."""
        return None
