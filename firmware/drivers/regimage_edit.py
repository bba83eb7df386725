# RegImage with the methods tests and tools use to look into and change an
# image: dump it as file text, read or write single registers, list the
# devices. A node never loads this module (every name a node loads stays in
# its RAM for good), so these live apart from firmware.drivers.regimage.

from firmware.drivers.regimage import RegImage


class RegImageEdit(RegImage):
    def dump(self):
        """The image as text in the file format (16 registers a line, zero runs left out)."""
        lines = []
        for addr in sorted(self.devices):
            regs = self.devices[addr]
            lines.append("device %02X" % addr)
            for row in range(0, 256, 16):
                chunk = regs[row:row + 16]
                if any(chunk):
                    lines.append("%02X: %s" % (row, " ".join("%02X" % b for b in chunk)))
        return "\n".join(lines) + "\n"

    def get(self, addr, reg):
        """One register's value."""
        return self._device(addr)[reg & 0xFF]

    def put(self, addr, reg, data):
        """Write bytes from `reg` on (in memory), creating the device if needed."""
        regs = self.devices.get(addr)
        if regs is None:
            regs = bytearray(256)
            self.devices[addr] = regs
        for i in range(len(data)):
            regs[(reg + i) & 0xFF] = data[i]

    def scan(self):
        """Addresses that answer, as machine.I2C.scan() lists them."""
        return sorted(self.devices)
