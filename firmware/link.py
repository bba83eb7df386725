# The node's uplink: a UART/RS-485 line carrying protocol.stream records, or
# a LoRa radio. Both offer send(frame) -> bool and log(text).
#
# The LoRa side (LoraLink) is in firmware.link_lora, which only
# LoRa nodes load; the link states below are shared.

# Link states (an explicit state, as for every link in knute).
UP = "up"
DOWN = "down"


class UartLink:
    """Frames as FRAME records (0x00 | COBS(type | body | CRC-32) | 0x00) on a UART."""

    lora = False

    def __init__(self, port, log_records=False):
        from protocol import stream  # only wired nodes carry the stream framing

        self.stream = stream
        self.port = port
        self.log_records = log_records
        self.state = UP
        self.errors = 0

    def send(self, frame):
        """Write one FRAME record; False when the port refused it."""
        return self.write_record(self.stream.REC_FRAME, frame)

    def write_record(self, rtype, body):
        """Write one link record of any type; False on a port error."""
        try:
            self.port.write(self.stream.encode_record(rtype, body))
        except OSError:
            self.errors += 1
            self.state = DOWN
            return False
        self.state = UP
        return True

    def log(self, text):
        """Copy a console line to the link as a LOG record, when enabled."""
        if self.log_records:
            data = text.encode()
            self.write_record(self.stream.REC_LOG, data[:self.stream.MAX_BODY])
