# A register-image file served as an I2C bus, so a driver written for
# machine.I2C runs on the unix port and in tests against a recorded or
# hand-written chip: the unix HAL returns a RegImage from i2c(name).
#
# File format (text, "knute register image v1"):
#
#   # BME280 on the bench bus        <- '#' starts a comment, to end of line
#   device 76                        <- I2C address in hex (0x76 also accepted);
#                                       the lines below belong to this device
#   88: 70 6B 43 67 18 FC 7D 8E      <- register (hex) ':' then byte values (hex)
#   90: 43 D6 D0 0B                     filling that register and the ones after it
#   D0: 60
#
# Several `device` sections may share one file (one bus). Registers a file does
# not list read as 0x00; addresses that have no section answer every transfer
# with OSError(ENODEV), as machine.I2C does when nothing acknowledges. Writes
# change the image in memory only. When the image came from a file and
# `watch` is on, every read first checks the file's size and mtime and reloads
# it when either changed, so a bench test can change a reading while the node
# runs (in-memory writes are lost on such a reload).
#
# This is what a node loads; the editing methods tests and tools use (dump,
# get, put, scan) are in firmware.drivers.regimage_edit.

import os

_ENODEV = 19


class RegImage:
    def __init__(self, text=None, path=None, watch=True):
        self.path = path
        self.watch = watch
        self.devices = {}           # address -> bytearray(256)
        self._stamp = None
        self.reloads = 0
        if path is not None:
            self.refresh()
        elif text is not None:
            self.load(text)

    # --- the file ------------------------------------------------------

    def load(self, text):
        """Replace the image with the parsed text (a str, or a file read line by line).

        ValueError names the bad line.
        """
        devices = {}
        regs = None
        lineno = 0
        for raw in text.split("\n") if isinstance(text, str) else text:
            lineno += 1
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            try:
                if line.startswith("device"):
                    addr = int(line[6:], 16)
                    if addr < 0 or addr > 0x7F:
                        raise ValueError("address out of range")
                    regs = devices.get(addr)
                    if regs is None:
                        regs = devices[addr] = bytearray(256)
                    continue
                if regs is None:
                    raise ValueError("register line before any 'device' line")
                reg, sep, data = line.partition(":")
                if not sep:
                    raise ValueError("expected 'register: bytes'")
                reg = int(reg, 16)
                for item in data.split():
                    value = int(item, 16)
                    if reg < 0 or reg > 0xFF or value < 0 or value > 0xFF:
                        raise ValueError("register or byte out of range")
                    regs[reg] = value
                    reg += 1
            except ValueError as err:
                raise ValueError("regimage line %d: %s" % (lineno, err)) from None
        self.devices = devices

    def _file_stamp(self):
        st = os.stat(self.path)
        return (st[6], st[8])       # size, mtime

    def refresh(self):
        """Reload the file if it changed since it was read; True when it did."""
        if self.path is None:
            return False
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return False
        with open(self.path) as f:
            self.load(f)
        self._stamp = stamp
        self.reloads += 1
        return True

    # --- the machine.I2C subset drivers use ----------------------------

    def _device(self, addr):
        if self.watch and self.path is not None:
            self.refresh()
        regs = self.devices.get(addr)
        if regs is None:
            raise OSError(_ENODEV)
        return regs

    def readfrom_mem_into(self, addr, reg, buf, addrsize=8):
        """Fill `buf` from consecutive registers starting at `reg`."""
        regs = self._device(addr)
        for i in range(len(buf)):
            buf[i] = regs[(reg + i) & 0xFF]

    def readfrom_mem(self, addr, reg, nbytes, addrsize=8):
        """`nbytes` bytes from consecutive registers starting at `reg`."""
        buf = bytearray(nbytes)
        self.readfrom_mem_into(addr, reg, buf)
        return bytes(buf)

    def writeto_mem(self, addr, reg, buf, addrsize=8):
        """Store `buf` into consecutive registers starting at `reg`."""
        regs = self._device(addr)
        for i in range(len(buf)):
            regs[(reg + i) & 0xFF] = buf[i]
