"""An instruction-level model of the ESP32 ULP coprocessor (FSM), for the tests only.

It decodes the 32-bit words the program is assembled to and runs them: only
the instructions tools/ulp.py's pulse counter uses (ALU register and
immediate forms, LD, ST, JUMP, JUMPR, REG_RD of the RTC GPIO input register,
REG_WR of the RTC_IO block, WAKE, HALT), with the semantics of the ESP32 Technical
Reference Manual,
"ULP Coprocessor Instruction Set": 16-bit registers R0..R3; ALU results set
the zero flag and ADD/SUB the overflow flag; LD reads, ST writes the low 16
bits of an RTC memory word addressed in words; JUMPR compares R0 with its
immediate. Any other opcode is an error, so the program cannot use an
instruction the model does not know.

The RTC_IO pad registers start at zero, as after a power-on (MUX_SEL 0: the pad
belongs to the digital IO_MUX). RTC_GPIO_IN_REG shows an input's level only for
a pad the program has switched to the RTC domain (MUX_SEL 1, FUN_SEL 0, FUN_IE
1, from tools/ulp.RTC_PADS); any other pad reads 0, as it does on the chip.
"""

from __future__ import annotations

from collections.abc import Callable

from knute.tools import ulp

MAX_STEPS = 1000            # a run that does not HALT is a program error


class UlpError(Exception):
    """The program did something the model (or the ULP) cannot do."""


class Ulp:
    """RTC slow memory, four registers and the flags; run() is one timer wake-up."""

    def __init__(self, words: list[int], entry: int, inputs: Callable[[], int]) -> None:
        self.mem = list(words) + [0] * (2048 - len(words))
        self.entry = entry
        self.inputs = inputs        # the RTC GPIO input levels as a bit mask (bit n: RTC GPIO n)
        self.regs = [0, 0, 0, 0]
        self.zero = False
        self.ov = False
        self.wakes = 0
        self.steps = 0
        self.rtc_io: dict[int, int] = {}    # RTC_IO register (word in the block) -> value

    def pad_ready(self, rtcio: int) -> bool:
        """Whether RTC GPIO `rtcio` is routed to the RTC block as an input."""
        _gpio, reg, mux, fun_sel, fun_ie, _rue, _rde, _hold = ulp.RTC_PADS[rtcio]
        value = self.rtc_io.get((reg & 0xFF) >> 2, 0)
        return bool(value >> mux & 1 and not value >> fun_sel & 3 and value >> fun_ie & 1)

    def rtc_gpio_in(self) -> int:
        """RTC_GPIO_IN_NEXT: the inputs' levels, of the pads configured as RTC inputs only."""
        levels = self.inputs()
        ready = sum(1 << n for n in range(len(ulp.RTC_PADS)) if self.pad_ready(n))
        return levels & ready

    def word(self, index: int) -> int:
        """The low 16 bits of RTC memory word `index`."""
        return self.mem[index] & 0xFFFF

    def run(self) -> None:
        """Run from the entry word until HALT (the RTC timer starts the next run)."""
        pc = self.entry
        for _ in range(MAX_STEPS):
            ins = self.mem[pc]
            self.steps += 1
            op = ins >> 28
            nxt = pc + 1
            if op == 7:
                self._alu(ins)
            elif op == 13:                              # LD
                d, s, off = ins & 3, ins >> 2 & 3, ins >> 10 & 0x7FF
                self.regs[d] = self.mem[self.regs[s] + off] & 0xFFFF
            elif op == 6 and ins >> 25 & 7 == 4:        # ST
                s, d, off = ins & 3, ins >> 2 & 3, ins >> 10 & 0x7FF
                self.mem[self.regs[d] + off] = self.regs[s] & 0xFFFF
            elif op == 8:
                nxt = self._branch(ins, pc)
            elif op == 2:                               # REG_RD
                addr, periph = ins & 0xFF, ins >> 8 & 3
                low, high = ins >> 18 & 31, ins >> 23 & 31
                if (addr, periph) != (9, 1):
                    raise UlpError(f"REG_RD of a register the model has not: {addr}/{periph}")
                value = (self.rtc_gpio_in() << 14) >> low
                self.regs[0] = value & ((1 << (high - low + 1)) - 1)
            elif op == 1:                               # REG_WR
                addr, periph = ins & 0xFF, ins >> 8 & 3
                data, low, high = ins >> 10 & 0xFF, ins >> 18 & 31, ins >> 23 & 31
                if periph != 1:
                    raise UlpError(f"REG_WR of a block the model has not: {addr}/{periph}")
                mask = ((1 << (high - low + 1)) - 1) << low
                old = self.rtc_io.get(addr, 0)
                self.rtc_io[addr] = old & ~mask | data << low & mask
            elif op == 9 and ins >> 25 & 7 == 0:        # WAKE
                self.wakes += ins & 1
            elif op == 11:                              # HALT
                return
            else:
                raise UlpError(f"instruction {ins:#010x} at {pc} is not modelled")
            pc = nxt
        raise UlpError("the program did not halt")

    def _alu(self, ins: int) -> None:
        sub, sel, d, s = ins >> 25 & 7, ins >> 21 & 15, ins & 3, ins >> 2 & 3
        if sub == 0:
            b = self.regs[ins >> 4 & 3]
        elif sub == 1:
            b = ins >> 4 & 0xFFFF
        else:
            raise UlpError(f"ALU sub-opcode {sub} is not modelled")
        a = self.regs[s]
        self.ov = False
        if sel == 0:
            full = a + b
            self.ov = full > 0xFFFF
        elif sel == 1:
            full = a - b
            self.ov = full < 0
        elif sel == 2:
            full = a & b
        elif sel == 3:
            full = a | b
        elif sel == 4:
            full = b
        elif sel == 5:
            full = a << b
        elif sel == 6:
            full = a >> b
        else:
            raise UlpError(f"ALU operation {sel} is not modelled")
        self.regs[d] = full & 0xFFFF
        self.zero = self.regs[d] == 0

    def _branch(self, ins: int, pc: int) -> int:
        sub = ins >> 25 & 7
        if sub == 0:                                    # JUMP to an address
            if ins >> 21 & 1:
                raise UlpError("JUMP to a register is not modelled")
            kind, addr = ins >> 22 & 7, ins >> 2 & 0x7FF
            taken = kind == 0 or (kind == 1 and self.zero) or (kind == 2 and self.ov)
            return addr if taken else pc + 1
        if sub == 1:                                    # JUMPR: compare R0 with imm
            imm, cmp = ins & 0xFFFF, ins >> 16 & 1
            offset = ins >> 17 & 0x7F
            if ins >> 24 & 1:
                offset = -offset
            taken = self.regs[0] < imm if cmp == 0 else self.regs[0] >= imm
            return pc + offset if taken else pc + 1
        raise UlpError(f"branch sub-opcode {sub} is not modelled")
