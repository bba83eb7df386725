# Downlink frames: commands from the gateway to one node (docs/protocol.md
# section 12). The same shape as an uplink frame, told apart by its control
# byte and by the direction byte of its nonce:
#
#   offset  size  field
#   0       1     control: 0x60 = version 1 | long tag | kind 0 ("downlink")
#   1       4     device id, unsigned big-endian
#   5       3     downlink counter, unsigned big-endian (0 .. 16,777,215)
#   8       n     payload: CBOR array of 1..4 commands, AES-128-CCM encrypted
#   8+n     8     CCM tag (always 8 bytes on a downlink)
#
# The nonce is 0x01 (direction: downlink) | device id | counter (4) | 4 zero
# bytes: it can never equal an uplink nonce, so the downlink counter has its
# own space and may take any value an uplink counter also takes.
#
# A command is a CBOR array [command id, op, arguments...]; the node echoes
# the command id in its report (REPORT_FIELD) with the result. Everything a
# node needs to check a downlink is here; encode() and the command builders
# are the gateway's side.

import struct

from protocol import cbor, ccm
from protocol.errors import FRAME_DEVICE, FRAME_FCNT, FrameError

try:
    from micropython import const
except ImportError:  # CPython: const(x) is x
    def const(x):
        return x

CONTROL = const(0x60)
HEADER_LEN = const(8)
TAG_LEN = const(8)
DIR_DOWNLINK = const(1)
MIN_DOWNLINK = const(17)    # header + the smallest payload (1 byte) + tag
MAX_DOWNLINK = const(222)   # EU868's largest payload (DR4-DR5, SF8-SF7 at 125 kHz)
MAX_DCNT = const(0xFFFFFF)
MAX_COMMANDS = const(4)
MAX_CONFIG = const(4)       # codes in one config command: any 4 values fit in 51 bytes
MAX_CMD_ID = const(0xFFFF)
MAX_BUNDLE = const(0xFFFF)    # bytes of one module bundle (offsets fit 16 bits)

# Frame-level reasons: the node drops the whole downlink and counts the reason.
DL_SHORT = "dl_short"       # shorter than MIN_DOWNLINK (truncated)
DL_LONG = "dl_long"         # longer than MAX_DOWNLINK (oversize)
DL_FORMAT = "dl_format"     # control byte is not CONTROL
DL_DEVICE = "dl_device"     # addressed to another device id
DL_FORGED = "dl_forged"     # tag does not verify under any key the node holds
DL_REPLAY = "dl_replay"     # counter equal to the last accepted one
DL_ORDER = "dl_order"       # counter below the last accepted one (late or replayed)
DL_PAYLOAD = "dl_payload"   # authentic, but not a CBOR array of commands
DL_REASONS = (DL_SHORT, DL_LONG, DL_FORMAT, DL_DEVICE, DL_FORGED, DL_REPLAY, DL_ORDER,
              DL_PAYLOAD)

# Command ops
OP_CLOCK = const(1)         # [id, 1, uplink fcnt, unix seconds, milliseconds]
OP_CONFIG = const(2)        # [id, 2, {config code: value, ...}]
OP_ACK_ALARM = const(3)     # [id, 3, alarm bits]
OP_REKEY = const(4)         # [id, 4, key number, new key (16-byte string)]
OP_REKEY_DONE = const(5)    # [id, 5, key number]
OP_REBOOT = const(6)        # [id, 6]
OP_UPD_BEGIN = const(7)     # [id, 7, update number, bundle size]
OP_UPD_CHUNK = const(8)     # [id, 8, update number, offset, bytes]
OP_UPD_SWITCH = const(9)    # [id, 9, update number]

# Command results, by their code in a report entry (0 .. 15).
RESULTS = ("applied", "cmd_unknown", "cmd_args", "cmd_range", "cmd_key", "cmd_state",
           "cmd_hash", "cmd_stale", "cmd_order")
APPLIED = const(0)
CMD_UNKNOWN = const(1)      # op not known to this node
CMD_ARGS = const(2)         # wrong number or type of arguments
CMD_RANGE = const(3)        # a value outside its whitelist range (detail: config code)
CMD_KEY = const(4)          # a config code not in the whitelist for this role (detail: code)
CMD_STATE = const(5)        # not possible now (no update begun, other rekey pending, ...)
CMD_HASH = const(6)         # a module's SHA-256 does not match; nothing replaced
CMD_STALE = const(7)        # clock answer for an uplink that was not the node's last
CMD_ORDER = const(8)        # update chunk beyond the bytes staged so far

# Config whitelist: (code, section, key, lowest, highest). Codes are 1..15 so
# that a rejected code fits the detail nibble of a report entry.
CONFIG_KEYS = (
    (1, "water", "sends_per_day", 1, 24),       # and must divide 24
    (2, "water", "profile_len", 1, 24),         # and >= 24 / sends_per_day
    (3, "water", "burst_lph", 100, 0xFFFFFF),
    (4, "water", "leak_hours", 1, 24),
    (5, "water", "dry_days", 1, 365),
    (6, "water", "backflow_l", 1, 100000),
    (7, "water", "low_battery_mv", 2000, 4200),
    (8, "air", "interval_s", 60, 86400),
    (9, "air", "warmup_s", 0, 600),
    (10, "air", "sample_s", 1, 3600),
    (11, "radio", "sf", 7, 12),
    (12, "radio", "power_dbm", 2, 14),          # EU868 g/g1 sub-bands: 14 dBm (25 mW) ERP
    (13, "radio", "freq_hz", 868100000, 868500000),
    (14, "radio", "bw_hz", 125000, 250000),
)
DIVIDES_24 = (1, 2, 3, 4, 6, 8, 12, 24)

# The uplink report: one optional series field at the end of a kind's
# payload, [flags, entry, entry, ...]; an entry is
#   command id << 8 | detail << 4 | result
FLAG_WANT = const(1)        # send any queued downlink in this uplink's windows
FLAG_CLOCK = const(2)       # the node asks for the time (answer with OP_CLOCK)
FLAG_ALARM = const(4)       # an alarm in this frame waits for OP_ACK_ALARM
FLAG_REKEY = const(8)       # this uplink is sealed with the new key of a pending rekey
FLAG_UPDATE = const(16)     # a module update is being staged: send the next chunk
MAX_REPORT = const(8)       # entries after the flags
REPORT_FIELD = ("dl", "series", "", 1, 1, 0, 0xFFFFFF, (1, 1 + MAX_REPORT), 1)

# EU868 maximum MAC payload by spreading factor at 125 kHz (LoRaWAN Regional
# Parameters RP002-1.0.4, table "EU863-870 maximum payload size", column M);
# a knute downlink uses the whole of it, having no LoRaWAN MAC header.
EU868_MAX_PAYLOAD = {7: 222, 8: 222, 9: 115, 10: 51, 11: 51, 12: 51}


def header(device_id, dcnt):
    """The 8 header bytes of a downlink (also its CCM associated data)."""
    if device_id < 0 or device_id > 0xFFFFFFFF:
        raise FrameError(FRAME_DEVICE, str(device_id))
    if dcnt < 0 or dcnt > MAX_DCNT:
        raise FrameError(FRAME_FCNT, str(dcnt))
    return struct.pack(">BIBH", CONTROL, device_id, dcnt >> 16, dcnt & 0xFFFF)


def nonce(device_id, dcnt):
    """The 13-byte CCM nonce of a downlink: direction byte 0x01."""
    return struct.pack(">BIIxxxx", DIR_DOWNLINK, device_id, dcnt)


def parse_header(buf):
    """(device_id, dcnt) of a downlink, checking length and control byte (no key needed)."""
    n = len(buf)
    if n > MAX_DOWNLINK:
        raise FrameError(DL_LONG, str(n))
    if n < MIN_DOWNLINK:
        raise FrameError(DL_SHORT, str(n))
    if buf[0] != CONTROL:
        raise FrameError(DL_FORMAT, "control 0x%02x" % buf[0])
    device_id, hi, lo = struct.unpack_from(">IBH", buf, 1)
    return device_id, (hi << 16) | lo


def open_with(buf, device_id, dcnt, block):
    """The decrypted payload bytes; FrameError(dl_forged) when the tag fails."""
    try:
        return ccm.open_(block, nonce(device_id, dcnt), bytes(buf[:HEADER_LEN]),
                         bytes(buf[HEADER_LEN:]), TAG_LEN)
    except FrameError:
        raise FrameError(DL_FORGED) from None


def commands(plain):
    """The command list of a decrypted payload; FrameError(dl_payload) if it is not one.

    Checks only the frame's shape: a CBOR array of 1..4 arrays, each starting
    with a command id (0..65535) and an op (unsigned). Arguments are checked by
    the node per command, and reported.
    """
    try:
        value = cbor.decode(plain)
    except FrameError as err:
        raise FrameError(DL_PAYLOAD, err.reason) from None
    if not isinstance(value, list) or not value or len(value) > MAX_COMMANDS:
        raise FrameError(DL_PAYLOAD, "not an array of 1..4 commands")
    for cmd in value:
        if (not isinstance(cmd, list) or len(cmd) < 2 or not _uint(cmd[0], MAX_CMD_ID)
                or not _uint(cmd[1], 0xFF)):
            raise FrameError(DL_PAYLOAD, "command is not [id, op, ...]")
    return value


def _uint(value, hi):
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= hi


def encode(device_id, dcnt, cmds, key, block=None):
    """A sealed downlink carrying the command list `cmds` (see the builders below)."""
    if not cmds or len(cmds) > MAX_COMMANDS:
        raise ValueError("a downlink carries 1..4 commands")
    plain = cbor.encode(cmds)
    if HEADER_LEN + len(plain) + TAG_LEN > MAX_DOWNLINK:
        raise FrameError(DL_LONG)
    if block is None:
        block = ccm.aes_block(key)
    hdr = header(device_id, dcnt)
    return hdr + ccm.seal(block, nonce(device_id, dcnt), hdr, plain, TAG_LEN)


def decode(buf, key, block=None):
    """dict(device_id, dcnt, commands) of a downlink under `key`; FrameError with a dl_ reason.

    No counter check: that needs the receiver's state (firmware.downlink).
    """
    device_id, dcnt = parse_header(buf)
    if block is None:
        block = ccm.aes_block(key)
    plain = open_with(buf, device_id, dcnt, block)
    return {"device_id": device_id, "dcnt": dcnt, "commands": commands(plain)}


# Command builders (the gateway's side).

def clock(cmd_id, up_fcnt, unix_s, ms):
    """Set the clock: the time at the END of the node's uplink `up_fcnt`."""
    return [cmd_id, OP_CLOCK, up_fcnt, unix_s, ms]


def config(cmd_id, values):
    """Set configuration values: `values` maps CONFIG_KEYS codes to integers."""
    return [cmd_id, OP_CONFIG, dict(values)]


def ack_alarm(cmd_id, bits):
    """Acknowledge the alarm bits (the kind's alarm/status bit numbering)."""
    return [cmd_id, OP_ACK_ALARM, bits]


def rekey(cmd_id, key_no, new_key):
    """Phase 1 of a key rotation: the new key, numbered `key_no`."""
    return [cmd_id, OP_REKEY, key_no, bytes(new_key)]


def rekey_done(cmd_id, key_no):
    """Phase 2: sent under the new key once the gateway accepted an uplink under it."""
    return [cmd_id, OP_REKEY_DONE, key_no]


def reboot(cmd_id):
    """Reset the node once its report has been stored."""
    return [cmd_id, OP_REBOOT]


def upd_begin(cmd_id, upd_no, size):
    """Start staging module bundle `upd_no` of `size` bytes (drops any earlier staging)."""
    return [cmd_id, OP_UPD_BEGIN, upd_no, size]


def upd_chunk(cmd_id, upd_no, offset, data):
    """Bundle bytes at `offset`."""
    return [cmd_id, OP_UPD_CHUNK, upd_no, offset, bytes(data)]


def upd_switch(cmd_id, upd_no):
    """Verify every module of the staged bundle by SHA-256, then switch to the new set."""
    return [cmd_id, OP_UPD_SWITCH, upd_no]


def chunk_capacity(sf, cmd_id=0xFFFF, upd_no=0xFFFF, offset=0xFFFF):
    """Bundle bytes one chunk downlink carries at spreading factor `sf` (EU868, 125 kHz)."""
    room = EU868_MAX_PAYLOAD[sf] - HEADER_LEN - TAG_LEN
    fixed = len(cbor.encode([upd_chunk(cmd_id, upd_no, offset, b"")]))
    # A byte string's head grows by one byte at 24 bytes and again at 256.
    data = room - fixed
    if data >= 24:
        data -= 1
    return data


def config_entry(code):
    """The CONFIG_KEYS row of `code`, or None."""
    for row in CONFIG_KEYS:
        if row[0] == code:
            return row
    return None


def report_entry(cmd_id, result, detail=0):
    """One report entry: command id, result code (RESULTS) and a 0..15 detail."""
    return (cmd_id << 8) | ((detail & 0xF) << 4) | result


def parse_report(series):
    """(flags, [(command id, result name, detail), ...]) of a report series."""
    entries = []
    for item in series[1:]:
        result = item & 0xF
        name = RESULTS[result] if result < len(RESULTS) else "result_%d" % result
        entries.append((item >> 8, name, (item >> 4) & 0xF))
    return series[0], entries


# Module bundles (OP_UPD_*): the bytes the chunks carry, one entry per module,
#   path length (1) | path (UTF-8) | size (4, big-endian) | SHA-256 (32) | content

def path_ok(path):
    """True for a module path a bundle may carry: firmware/ or protocol/, .py or .mpy."""
    if not isinstance(path, str) or len(path) < 1 or len(path) > 64:
        return False
    if not (path.startswith("firmware/") or path.startswith("protocol/")):
        return False
    if not (path.endswith(".py") or path.endswith(".mpy")):
        return False
    if ".." in path or "//" in path:
        return False
    return all("a" <= ch <= "z" or "0" <= ch <= "9" or ch in "_./" for ch in path)


def bundle(files):
    """The bundle bytes of [(path, content), ...] (the gateway's side)."""
    import hashlib

    out = []
    for path, content in files:
        if not path_ok(path):
            raise ValueError("module path not allowed: " + str(path))
        raw = path.encode()
        out.append(bytes((len(raw),)) + raw + struct.pack(">I", len(content))
                   + hashlib.sha256(content).digest() + bytes(content))
    data = b"".join(out)
    if len(data) > MAX_BUNDLE:
        raise ValueError("bundle longer than %d bytes" % MAX_BUNDLE)
    return data
