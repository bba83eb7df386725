"""The ESP32 ULP pulse counter: its program and an assembler for the instructions it uses.

The deep-sleep water meter (docs/firmware.md, "Power") leaves pulse counting
to the ULP coprocessor: the RTC timer wakes the ULP every ``PERIOD_MS``, the
program samples the reed input, the direction input and the tamper input
through the RTC GPIO input register, and keeps its counters in RTC slow
memory, which survives the main CPU's deep sleep and resets.

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

The counters only ever grow; the CPU never writes them. It takes
``(forward - taken) mod 2**16`` at each wake-up and keeps ``taken`` in flash
beside the index it adds to (firmware.deepsleep), so a reset between the two
can neither lose nor double a pulse.

A contact change is accepted after ``DEBOUNCE`` samples in a row at the new
level (20 ms at 10 ms a sample: reed bounce lasts a few ms); a pulse is the
accepted closing edge. At the meter's maximum rated flow with 0.1 L a pulse
(Q4 = 3.125 m3/h for a DN15 meter, MID class R160) pulses come 115 ms apart,
the contact closed about half of it: five samples each way.

The instruction encodings follow the ESP32 Technical Reference Manual,
chapter "ULP Coprocessor", section "ULP Coprocessor Instruction Set" (field
layouts of ALU, ST, LD, JUMP, JUMPR, REG_RD, WAKE and HALT). The assembler
takes word offsets for LD/ST and labels for jumps; it knows only these
instructions.
"""

from __future__ import annotations

PERIOD_MS = 10
DEBOUNCE = 2
WORDS = ("state", "run", "forward", "reverse", "tamper", "burst_limit", "window_left",
         "window_count", "woken")
RTC_GPIO_IN = 9             # RTC_GPIO_IN_REG (0x3FF48424) as a word address in RTC_IO
RTC_GPIO_IN_FIRST_BIT = 14  # RTC_GPIO_IN_NEXT: bit 14 + RTC GPIO number
PERIPH_RTC_IO = 1

OP_WR_REG, OP_RD_REG, OP_ST, OP_ALU, OP_BRANCH, OP_END, OP_HALT, OP_LD = 1, 2, 6, 7, 8, 9, 11, 13
ALU = {"add": 0, "sub": 1, "and": 2, "or": 3, "move": 4, "lsh": 5, "rsh": 6}
JUMP_TYPES = {"": 0, "eq": 1, "ov": 2}

PROGRAM = """
entry:
    move r3, 0                      ; r3: RTC memory base of the counter words
    reg_rd TAMPER                   ; r0 = tamper input
    jumpr no_tamper, TAMPER_ACTIVE_NOT, lt_or_ge
    move r0, 1
    st r0, r3, tamper
no_tamper:
    reg_rd PULSE                    ; r0 = reed level now
    ld r1, r3, state
    sub r2, r0, r1                  ; zero when the level is the debounced one
    jump same, eq
    ld r0, r3, run                  ; a different level: one more sample of it
    add r0, r0, 1
    st r0, r3, run
    jumpr done, DEBOUNCE, lt        ; not yet DEBOUNCE samples: maybe a bounce
    move r0, 0
    st r0, r3, run
    move r0, 1
    sub r0, r0, r1                  ; the new debounced level: 1 - state
    st r0, r3, state
    jumpr done, 1, ge               ; opened: nothing to count
    reg_rd DIRECTION                ; closed: a pulse; the direction input says which way
    jumpr reverse, 1, lt
    ld r0, r3, forward
    add r0, r0, 1
    st r0, r3, forward
    ld r0, r3, window_count
    add r0, r0, 1
    st r0, r3, window_count
    ld r0, r3, burst_limit
    jumpr done, 1, lt               ; burst wake-up off
    move r1, r0
    ld r0, r3, window_count
    sub r0, r0, r1
    jump done, ov                   ; fewer than burst_limit pulses in this window
    ld r0, r3, woken
    jumpr done, 1, ge               ; the CPU was woken already
    move r0, 1
    st r0, r3, woken
    wake
    jump done
reverse:
    ld r0, r3, reverse
    add r0, r0, 1
    st r0, r3, reverse
    jump done
same:
    move r0, 0
    st r0, r3, run                  ; a level change shorter than DEBOUNCE was a bounce
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
    consts = {"DEBOUNCE": DEBOUNCE, "WINDOW_SAMPLES": window_s * 1000 // PERIOD_MS}
    inputs = {"PULSE": pulse_rtcio, "DIRECTION": direction_rtcio, "TAMPER": tamper_rtcio}
    for i, name in enumerate(WORDS):
        consts[name] = i
    lines = []
    for raw in PROGRAM.splitlines():
        text = raw.split(";", 1)[0].strip()
        if text:
            lines.append(text)
    base = len(WORDS)
    labels: dict[str, int] = {}
    pc = base
    for text in lines:
        if text.endswith(":"):
            labels[text[:-1]] = pc
        else:
            pc += 1
    words = [0] * base
    words[WORDS.index("state")] = 1     # the contact starts open
    pc = base
    for text in lines:
        if text.endswith(":"):
            continue
        op, _, rest = text.partition(" ")
        args = [a.strip() for a in rest.split(",")] if rest else []
        words.append(_encode(op, args, pc, labels, consts, inputs, tamper_active))
        pc += 1
    return words, labels["entry"]


def _imm(token: str, consts: dict[str, int]) -> int:
    return consts[token] if token in consts else int(token, 0)


def _encode(op: str, args: list[str], pc: int, labels: dict[str, int],
            consts: dict[str, int], inputs: dict[str, int], tamper_active: int) -> int:
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
        first, addr, offset = _reg(args[0]), _reg(args[1]), _imm(args[2], consts)
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
        if threshold_tok == "TAMPER_ACTIVE_NOT":
            # skip the latch unless the input is at its active level
            threshold, cond = (1, 0) if tamper_active else (1, 1)
        else:
            threshold, cond = _imm(threshold_tok, consts), {"lt": 0, "ge": 1}[cond_tok]
        offset = labels[target] - pc
        sign = 1 if offset < 0 else 0
        # JUMPR: imm[15:0] cmp[16] offset[23:17] sign[24] sub 1 [27:25] op 8
        return (threshold & 0xFFFF | cond << 16 | abs(offset) << 17 | sign << 24 | 1 << 25
                | OP_BRANCH << 28)
    if op == "reg_rd":
        bit = RTC_GPIO_IN_FIRST_BIT + inputs[args[0]]
        # REG_RD: addr[7:0] periph[9:8] low[22:18] high[27:23] op 2
        return RTC_GPIO_IN | PERIPH_RTC_IO << 8 | bit << 18 | bit << 23 | OP_RD_REG << 28
    if op == "wake":
        return 1 | 0 << 25 | OP_END << 28     # END/WAKE: wakeup[0] sub 0 op 9
    if op == "halt":
        return OP_HALT << 28
    raise ValueError(f"the ULP assembler here does not know {op!r}")


def image(pulse_rtcio: int, direction_rtcio: int, tamper_rtcio: int,
          tamper_active: int = 1) -> bytes:
    """``ulp.bin`` for a board's flash: the entry word, then the words, little endian."""
    words, entry = assemble(pulse_rtcio, direction_rtcio, tamper_rtcio, tamper_active)
    return b"".join(w.to_bytes(4, "little") for w in [entry, *words])
