"""The ESP32 ULP pulse counter: its program and an assembler for the instructions it uses.

The deep-sleep water meter (docs/firmware.md, "Power") leaves pulse counting
to the ULP coprocessor: the RTC timer wakes the ULP every ``PERIOD_MS``, the
program samples the reed input, the direction input and the tamper input
through the RTC GPIO input register, and keeps its counters in RTC slow
memory, which survives the main CPU's deep sleep and resets. Before its first
sample it switches its three pads to the RTC domain (``RTC_PADS``, ``pad_writes``):
until then RTC_GPIO_IN_REG does not show them.

RTC memory words (16-bit values; ``WORDS`` names them):
  state          debounced reed level (1 open, 0 closed)
  run            samples in a row that differ from ``state``
  forward        pulses counted with the direction input high (wraps at 2**16)
  reverse        pulses counted with the direction input low (wraps at 2**16)
  tamper         1 once the tamper input was seen active (the CPU clears it)
  burst_limit    forward pulses within one burst window that wake the CPU (0: off)
  window_left    samples left in the current burst window
  window_count   forward pulses in the current burst window
  woken          1 once a burst woke the CPU (the CPU clears it)
  pads           1 once the program switched its three pads to the RTC domain (the
                 CPU clears it at each boot, so the next run sets them up again)

The counters only ever grow; the CPU never writes them. It takes
``(forward - taken) mod 2**16`` at each wake-up and keeps ``taken`` in flash
beside the index it adds to (firmware/ulp_counter.py), so a reset between the two
can neither lose nor double a pulse.

A contact change is accepted after ``DEBOUNCE`` samples in a row at the new
level (20 ms at 10 ms a sample: reed bounce lasts a few ms); a pulse is the
accepted closing edge. At the meter's maximum rated flow with 0.1 L a pulse
(Q4 = 3.125 m3/h for a DN15 meter, MID class R160) pulses come 115 ms apart,
the contact closed about half of it: five samples each way.

The source is in the syntax of Espressif's ULP assembler (binutils-esp32ulp),
which micropython-esp32-ulp (on PyPI) also reads: ``source()`` gives the full
text for a board's inputs, and the test suite assembles it with that package
on the MicroPython unix port and checks that ``image()`` gives the same bytes
(tests/firmware/test_ulp_esp32ulp.py). The encoder here is what provisioning
uses, so ``knute provision`` needs no MicroPython on the technician's host.
Its encodings follow the ESP32 Technical Reference Manual, chapter "ULP
Coprocessor", section "ULP Coprocessor Instruction Set" (field layouts of
ALU, ST, LD, JUMP, JUMPR, REG_RD, REG_WR, WAKE and HALT); it knows only these
instructions, ``.set``, ``.text`` and ``.long``. Labels are word addresses,
LD/ST offsets bytes (as in that assembler).

``image()`` is the ESP-IDF ULP binary that ``esp32.ULP.load_binary`` takes
(ESP-IDF ``ulp_load_binary``: a 12-byte header, magic ``ulp\\0``, then the
text section): the counter words are the first ``len(WORDS)`` words of the
text, the code starts at ``ENTRY`` (words).
"""

from __future__ import annotations

PERIOD_MS = 10
DEBOUNCE = 2
WORDS = ("state", "run", "forward", "reverse", "tamper", "burst_limit", "window_left",
         "window_count", "woken", "pads")
ENTRY = len(WORDS)          # the first instruction, in words (firmware/hal/esp32.py)
RTC_GPIO_IN_REG = 0x3FF48424    # ESP32 TRM, "RTC_IO registers": RTC_GPIO_IN_REG
RTC_GPIO_IN_FIRST_BIT = 14  # RTC_GPIO_IN_NEXT: bit 14 + RTC GPIO number
_RTCIO_BASE, _SENS_BASE = 0x3FF48400, 0x3FF48800
PERIPH_RTC_IO = 1
# The RTC GPIO pads, one row per RTC GPIO number: (GPIO, pad register, MUX_SEL bit,
# FUN_SEL low bit (2 bits), FUN_IE bit, RUE bit, RDE bit, HOLD bit); RUE/RDE None where
# the pad has no pull resistors (GPIO 34 ... 39). ESP32 Technical Reference Manual,
# chapter "IO_MUX and GPIO Matrix", section "RTC IO_MUX": table "RTC_MUX Pin Summary"
# (GPIO -> RTC GPIO number -> pad name), and the RTC_IO register descriptions in the
# same chapter: RTCIO_SENSOR_PADS_REG (SENSE1..4), RTCIO_ADC_PAD_REG (ADC1/2),
# RTCIO_PAD_DAC1_REG, RTCIO_PAD_DAC2_REG, RTCIO_XTAL_32K_PAD_REG (X32N, X32P) and
# RTCIO_TOUCH_PADn_REG. MUX_SEL 1 routes the pad to the RTC block, FUN_SEL 0 is its
# RTC_GPIO function, FUN_IE enables its input; only then does RTC_GPIO_IN_REG see it.
# The datasheet's pin list ("Pin Definitions", RTC function column) gives the same
# GPIO -> RTC GPIO numbers. This table is the only copy: provisioning's pin check,
# the program's prologue and the tests' ULP model all read it.
RTC_PADS = (
    (36, 0x3FF4847C, 27, 22, 19, None, None, 31),   # RTC_GPIO0  SENSOR_PADS SENSE1
    (37, 0x3FF4847C, 26, 17, 14, None, None, 30),   # RTC_GPIO1  SENSE2
    (38, 0x3FF4847C, 25, 12, 9, None, None, 29),    # RTC_GPIO2  SENSE3
    (39, 0x3FF4847C, 24, 7, 4, None, None, 28),     # RTC_GPIO3  SENSE4
    (34, 0x3FF48480, 29, 26, 23, None, None, 31),   # RTC_GPIO4  ADC_PAD ADC1
    (35, 0x3FF48480, 28, 21, 18, None, None, 30),   # RTC_GPIO5  ADC_PAD ADC2
    (25, 0x3FF48484, 17, 15, 11, 27, 28, 29),       # RTC_GPIO6  PAD_DAC1
    (26, 0x3FF48488, 17, 15, 11, 27, 28, 29),       # RTC_GPIO7  PAD_DAC2
    (33, 0x3FF4848C, 18, 15, 11, 27, 28, 29),       # RTC_GPIO8  XTAL_32K_PAD X32N
    (32, 0x3FF4848C, 17, 9, 5, 22, 23, 24),         # RTC_GPIO9  XTAL_32K_PAD X32P
    (4, 0x3FF48494, 19, 17, 13, 27, 28, 31),        # RTC_GPIO10 TOUCH_PAD0
    (0, 0x3FF48498, 19, 17, 13, 27, 28, 31),        # RTC_GPIO11 TOUCH_PAD1
    (2, 0x3FF4849C, 19, 17, 13, 27, 28, 31),        # RTC_GPIO12 TOUCH_PAD2
    (15, 0x3FF484A0, 19, 17, 13, 27, 28, 31),       # RTC_GPIO13 TOUCH_PAD3
    (13, 0x3FF484A4, 19, 17, 13, 27, 28, 31),       # RTC_GPIO14 TOUCH_PAD4
    (12, 0x3FF484A8, 19, 17, 13, 27, 28, 31),       # RTC_GPIO15 TOUCH_PAD5
    (14, 0x3FF484AC, 19, 17, 13, 27, 28, 31),       # RTC_GPIO16 TOUCH_PAD6
    (27, 0x3FF484B0, 19, 17, 13, 27, 28, 31),       # RTC_GPIO17 TOUCH_PAD7
)
# GPIO -> RTC GPIO number: the GPIOs the ULP can read.
RTC_GPIO = {row[0]: number for number, row in enumerate(RTC_PADS)}
MAGIC = 0x00706C75          # "ulp\\0", ESP-IDF components/ulp/ld/esp32.ulp.ld

OP_WR_REG, OP_RD_REG, OP_ST, OP_ALU, OP_BRANCH, OP_END, OP_HALT, OP_LD = 1, 2, 6, 7, 8, 9, 11, 13
ALU = {"add": 0, "sub": 1, "and": 2, "or": 3, "move": 4, "lsh": 5, "rsh": 6}
JUMP_TYPES = {"": 0, "eq": 1, "ov": 2}

# The counter words come first in .text; LD/ST address them as r3 (0) plus
# a byte offset, named by ``.set`` lines that source() writes from WORDS.
PROGRAM = """
    .text
    .long 1                         // state: the contact starts open
    .long 0, 0, 0, 0, 0, 0, 0, 0, 0 // run ... pads
entry:
    move r3, 0                      // r3: RTC memory base of the counter words
    ld r0, r3, pads
    jumpr pads_done, 1, ge          // the pads are set up already
PADS_INIT
    move r0, 1
    st r0, r3, pads
pads_done:
    reg_rd RTC_GPIO_IN_REG, TAMPER_BIT, TAMPER_BIT
    jumpr no_tamper, 1, TAMPER_IDLE // r0 = tamper input: at rest, skip the latch
    move r0, 1
    st r0, r3, tamper
no_tamper:
    reg_rd RTC_GPIO_IN_REG, PULSE_BIT, PULSE_BIT
    ld r1, r3, state
    sub r2, r0, r1                  // zero when the level is the debounced one
    jump same, eq
    ld r0, r3, run                  // a different level: one more sample of it
    add r0, r0, 1
    st r0, r3, run
    jumpr done, DEBOUNCE, lt        // not yet DEBOUNCE samples: maybe a bounce
    move r0, 0
    st r0, r3, run
    move r0, 1
    sub r0, r0, r1                  // the new debounced level: 1 - state
    st r0, r3, state
    jumpr done, 1, ge               // opened: nothing to count
    reg_rd RTC_GPIO_IN_REG, DIRECTION_BIT, DIRECTION_BIT
    jumpr backwards, 1, lt          // closed: a pulse; the direction input says which way
    ld r0, r3, forward
    add r0, r0, 1
    st r0, r3, forward
    ld r0, r3, window_count
    add r0, r0, 1
    st r0, r3, window_count
    ld r0, r3, burst_limit
    jumpr done, 1, lt               // burst wake-up off
    move r1, r0
    ld r0, r3, window_count
    sub r0, r0, r1
    jump done, ov                   // fewer than burst_limit pulses in this window
    ld r0, r3, woken
    jumpr done, 1, ge               // the CPU was woken already
    move r0, 1
    st r0, r3, woken
    wake
    jump done
backwards:
    ld r0, r3, reverse
    add r0, r0, 1
    st r0, r3, reverse
    jump done
same:
    move r0, 0
    st r0, r3, run                  // a level change shorter than DEBOUNCE was a bounce
done:
    ld r0, r3, window_left
    jumpr new_window, 1, lt
    sub r0, r0, 1
    st r0, r3, window_left
    halt
new_window:
    move r0, WINDOW_SAMPLES
    st r0, r3, window_left
    move r0, 0
    st r0, r3, window_count
    halt
"""


def pad_writes(rtcio: int) -> list[tuple[int, int, int, int]]:
    """The register writes that give the ULP RTC GPIO `rtcio` as an input: (reg, high, low, value).

    What ESP-IDF's ``rtc_gpio_init`` plus an input configuration do, from ``RTC_PADS``:
    MUX_SEL 1 (the pad to the RTC block), FUN_SEL 0 (RTC_GPIO), FUN_IE 1 (input on),
    the pull-up on and the pull-down off where the pad has them (the reed contact and
    the switches pull to GND), HOLD 0 (the pad follows its input, not a latched value).
    """
    _gpio, reg, mux, fun_sel, fun_ie, rue, rde, hold = RTC_PADS[rtcio]
    writes = [(reg, mux, mux, 1), (reg, fun_sel + 1, fun_sel, 0), (reg, fun_ie, fun_ie, 1)]
    if rue is not None and rde is not None:
        writes += [(reg, rue, rue, 1), (reg, rde, rde, 0)]
    writes.append((reg, hold, hold, 0))
    return writes


def _pads_init(rtcios: tuple[int, ...]) -> str:
    lines = []
    for rtcio in rtcios:
        for reg, high, low, value in pad_writes(rtcio):
            lines.append(f"    reg_wr 0x{reg:x}, {high}, {low}, {value}  // RTC_GPIO{rtcio}\n")
    return "".join(lines)


def source(pulse_rtcio: int, direction_rtcio: int, tamper_rtcio: int,
           tamper_active: int = 1, window_s: int = 60) -> str:
    """The pulse counter's assembler source for these RTC GPIO numbers.

    ``tamper_active`` is the tamper input's level when tampered with.
    """
    for rtcio in (pulse_rtcio, direction_rtcio, tamper_rtcio):
        if not 0 <= rtcio <= 17:
            raise ValueError(f"RTC GPIO {rtcio} is not 0 ... 17")
    sets = [("RTC_GPIO_IN_REG", f"0x{RTC_GPIO_IN_REG:x}"),
            ("PULSE_BIT", str(RTC_GPIO_IN_FIRST_BIT + pulse_rtcio)),
            ("DIRECTION_BIT", str(RTC_GPIO_IN_FIRST_BIT + direction_rtcio)),
            ("TAMPER_BIT", str(RTC_GPIO_IN_FIRST_BIT + tamper_rtcio)),
            ("DEBOUNCE", str(DEBOUNCE)),
            ("WINDOW_SAMPLES", str(window_s * 1000 // PERIOD_MS))]
    sets += [(name, str(i * 4)) for i, name in enumerate(WORDS)]
    idle = "lt" if tamper_active else "ge"
    text = "".join(f"    .set {name}, {value}\n" for name, value in sets)
    program = PROGRAM.replace("TAMPER_IDLE", idle)
    pads = _pads_init(tuple(dict.fromkeys((pulse_rtcio, direction_rtcio, tamper_rtcio))))
    return text + program.replace("PADS_INIT\n", pads)


def _reg(token: str) -> int:
    if len(token) == 2 and token[0] == "r" and token[1] in "0123":
        return int(token[1])
    raise ValueError(f"not a register: {token}")


def assemble(pulse_rtcio: int, direction_rtcio: int, tamper_rtcio: int,
             tamper_active: int = 1, window_s: int = 60) -> tuple[list[int], int]:
    """The pulse counter for these RTC GPIO numbers: (words, entry word).

    The data words (``WORDS``) come first, at word 0, then the code; load the
    words at the start of RTC slow memory and start the ULP at the entry word.
    """
    text = source(pulse_rtcio, direction_rtcio, tamper_rtcio, tamper_active, window_s)
    return assemble_source(text)


def assemble_source(text: str) -> tuple[list[int], int]:
    """The .text words of `text` (this module's subset of the syntax) and ``entry``'s word."""
    consts: dict[str, int] = {}
    lines: list[str] = []
    for raw in text.splitlines():
        line = raw.split("//", 1)[0].strip()
        if line.startswith(".set "):
            name, _, value = line[5:].partition(",")
            consts[name.strip()] = int(value.strip(), 0)
        elif line and line != ".text":
            lines.append(line)
    labels: dict[str, int] = {}
    statements: list[tuple[int, str]] = []
    pc = 0
    for line in lines:
        if line.endswith(":"):
            labels[line[:-1]] = pc
            continue
        statements.append((pc, line))
        pc += len(line[6:].split(",")) if line.startswith(".long ") else 1
    words: list[int] = []
    for pc, line in statements:
        op, _, rest = line.partition(" ")
        args = [a.strip() for a in rest.split(",")] if rest else []
        if op == ".long":
            words.extend(_imm(a, consts) & 0xFFFFFFFF for a in args)
        else:
            words.append(_encode(op, args, pc, labels, consts))
    return words, labels["entry"]


def _imm(token: str, consts: dict[str, int]) -> int:
    return consts[token] if token in consts else int(token, 0)


def _encode(op: str, args: list[str], pc: int, labels: dict[str, int],
            consts: dict[str, int]) -> int:
    if op in ALU:
        dreg = _reg(args[0])
        if op == "move":
            sreg_tok, operand = args[1], args[1]
        else:
            sreg_tok, operand = args[1], args[2]
        if operand[0] == "r" and operand[1:].isdigit():
            sreg = _reg(sreg_tok)
            treg = _reg(operand)
            # ALU_REG: dreg[1:0] sreg[3:2] treg[5:4] sel[24:21] sub 0 [27:25] op [31:28]
            return dreg | sreg << 2 | treg << 4 | ALU[op] << 21 | 0 << 25 | OP_ALU << 28
        sreg = 0 if op == "move" else _reg(sreg_tok)
        imm = _imm(operand, consts) & 0xFFFF
        # ALU_IMM: dreg sreg imm[19:4] sel[24:21] sub 1 op 7
        return dreg | sreg << 2 | imm << 4 | ALU[op] << 21 | 1 << 25 | OP_ALU << 28
    if op in ("st", "ld"):
        first, addr, offset = _reg(args[0]), _reg(args[1]), _imm(args[2], consts) // 4
        if op == "st":
            # ST: sreg[1:0] (value) dreg[3:2] (address) offset[20:10] sub 4 [27:25] op 6
            return first | addr << 2 | offset << 10 | 4 << 25 | OP_ST << 28
        # LD: dreg[1:0] sreg[3:2] offset[20:10] op 13
        return first | addr << 2 | offset << 10 | OP_LD << 28
    if op == "jump":
        cond = JUMP_TYPES[args[1] if len(args) > 1 else ""]
        # JUMP: addr[12:2] reg 0 [21] type[24:22] sub 0 op 8
        return labels[args[0]] << 2 | cond << 22 | 0 << 25 | OP_BRANCH << 28
    if op == "jumpr":
        target, threshold_tok, cond_tok = args
        threshold, cond = _imm(threshold_tok, consts), {"lt": 0, "ge": 1}[cond_tok]
        offset = labels[target] - pc
        sign = 1 if offset < 0 else 0
        # JUMPR: imm[15:0] cmp[16] offset[23:17] sign[24] sub 1 [27:25] op 8
        return (threshold & 0xFFFF | cond << 16 | abs(offset) << 17 | sign << 24 | 1 << 25
                | OP_BRANCH << 28)
    if op == "reg_rd":
        reg, high, low = (_imm(a, consts) for a in args)
        if not _RTCIO_BASE <= reg < _SENS_BASE:
            raise ValueError(f"reg_rd here reads RTC_IO registers only, not 0x{reg:x}")
        # REG_RD: addr[7:0] (word in the block) periph[9:8] low[22:18] high[27:23] op 2
        return (reg & 0xFF) >> 2 | PERIPH_RTC_IO << 8 | low << 18 | high << 23 | OP_RD_REG << 28
    if op == "reg_wr":
        reg, high, low, value = (_imm(a, consts) for a in args)
        if not _RTCIO_BASE <= reg < _SENS_BASE:
            raise ValueError(f"reg_wr here writes RTC_IO registers only, not 0x{reg:x}")
        if not 0 <= value <= 0xFF or not 0 <= low <= high <= 31 or high - low > 7:
            raise ValueError(f"reg_wr writes up to 8 bits: {high}:{low} = {value}")
        # REG_WR: addr[7:0] (word in the block) periph[9:8] data[17:10] low[22:18]
        # high[27:23] op 1
        return ((reg & 0xFF) >> 2 | PERIPH_RTC_IO << 8 | value << 10 | low << 18 | high << 23
                | OP_WR_REG << 28)
    if op == "wake":
        return 1 | 0 << 25 | OP_END << 28     # END/WAKE: wakeup[0] sub 0 op 9
    if op == "halt":
        return OP_HALT << 28
    raise ValueError(f"the ULP assembler here does not know {op!r}")


def image(pulse_rtcio: int, direction_rtcio: int, tamper_rtcio: int,
          tamper_active: int = 1) -> bytes:
    """``ulp.bin`` for a board's flash: the ESP-IDF ULP binary of the pulse counter.

    Header (little endian): magic, text offset 12, text size, data size 0,
    bss size 0; then the text words. Start the ULP at ``ENTRY`` * 4 bytes.
    """
    words, entry = assemble(pulse_rtcio, direction_rtcio, tamper_rtcio, tamper_active)
    if entry != ENTRY:
        raise ValueError(f"the program's entry is word {entry}, not {ENTRY}")
    text = b"".join(w.to_bytes(4, "little") for w in words)
    return (MAGIC.to_bytes(4, "little") + (12).to_bytes(2, "little")
            + len(text).to_bytes(2, "little") + bytes(4) + text)
