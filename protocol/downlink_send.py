# The sending side of protocol.downlink (docs/protocol.md section 12): encode
# and decode whole downlinks, the command builders, report parsing, module
# bundles and sizes. The gateway and the tools use it; a node, which only
# checks downlinks, never loads it (protocol.downlink offers these names on
# first use).

import struct

from . import ccm
from . import kinds as _kinds
from .downlink import commands, nonce, open_with, parse_header
from .downlink_path import path_ok
from .errors import FRAME_DEVICE, FRAME_FCNT, FrameError

CONTROL = 0x60
HEADER_LEN = 8
TAG_LEN = 8
DIR_DOWNLINK = 1
MIN_DOWNLINK = 17           # header + the smallest payload (1 byte) + tag
MAX_DOWNLINK = 222          # EU868's largest payload (SF7, SF8 at 125 kHz)
MAX_DCNT = 0xFFFFFF
MAX_COMMANDS = 4
MAX_CONFIG = 4              # codes in one config command: any 4 values fit in 51 bytes
MAX_CMD_ID = 0xFFFF
MAX_BUNDLE = 0xFFFF         # bytes of one module bundle (offsets fit 16 bits)

# Command ops
OP_CLOCK = 1                # [id, 1, uplink fcnt, unix seconds, milliseconds]
OP_CONFIG = 2               # [id, 2, {config code: value, ...}]
OP_ACK_ALARM = 3            # [id, 3, alarm bits]
OP_REKEY = 4                # [id, 4, key number, new key (16-byte string)]
OP_REKEY_DONE = 5           # [id, 5, key number]
OP_REBOOT = 6               # [id, 6]
OP_UPD_BEGIN = 7            # [id, 7, update number, bundle size]
OP_UPD_CHUNK = 8            # [id, 8, update number, offset, bytes]
OP_UPD_SWITCH = 9           # [id, 9, update number]

# Command results, by their code in a report entry (0 .. 15)
APPLIED = 0
CMD_UNKNOWN = 1             # op not known to this node
CMD_ARGS = 2                # wrong number or type of arguments
CMD_RANGE = 3               # a value outside its whitelist range (detail: config code)
CMD_KEY = 4                 # a config code not in the whitelist for this role (detail: code)
CMD_STATE = 5               # not possible now (no update begun, other rekey pending, ...)
CMD_HASH = 6                # a module's SHA-256 does not match; nothing replaced
CMD_STALE = 7               # clock answer for an uplink that was not the node's last
CMD_ORDER = 8               # update chunk beyond the bytes staged so far

# The uplink report: one optional series field at the end of a kind's
# payload, [flags, entry, entry, ...]; an entry is
#   command id << 8 | detail << 4 | result
FLAG_WANT = 1               # send any queued downlink in this uplink's windows
FLAG_CLOCK = 2              # the node asks for the time (answer with OP_CLOCK)
FLAG_ALARM = 4              # an alarm in this frame waits for OP_ACK_ALARM
FLAG_REKEY = 8              # this uplink is sealed with the new key of a pending rekey
FLAG_UPDATE = 16            # a module update is being staged: send the next chunk
MAX_REPORT = 8              # entries after the flags

RESULTS = ("applied", "cmd_unknown", "cmd_args", "cmd_range", "cmd_key", "cmd_state",
           "cmd_hash", "cmd_stale", "cmd_order")

# Frame-level reasons: the node drops the whole downlink and counts the reason
# (protocol.downlink raises them by value; a node keeps no names for them).
DL_SHORT = "dl_short"       # shorter than 17 bytes (truncated)
DL_LONG = "dl_long"         # longer than 222 bytes (oversize)
DL_FORMAT = "dl_format"     # control byte is not 0x60
DL_DEVICE = "dl_device"     # addressed to another device id
DL_FORGED = "dl_forged"     # tag does not verify under any key the node holds
DL_REPLAY = "dl_replay"     # counter equal to the last accepted one
DL_ORDER = "dl_order"       # counter below the last accepted one (late or replayed)
DL_PAYLOAD = "dl_payload"   # authentic, but not a CBOR array of commands

DL_REASONS = (DL_SHORT, DL_LONG, DL_FORMAT, DL_DEVICE, DL_FORGED, DL_REPLAY, DL_ORDER,
              DL_PAYLOAD)

# The report field every uplink kind ends with (a TABLE field tuple of protocol.kinds).
REPORT_FIELD = _kinds.REPORT_FIELD

# EU868 maximum application payload by spreading factor at 125 kHz (LoRaWAN
# Regional Parameters RP002-1.0.4, table "EU863-870 maximum payload size",
# column N): the sizes LoRaWAN equipment and the duty-cycle planning assume.
EU868_MAX_PAYLOAD = {7: 222, 8: 222, 9: 115, 10: 51, 11: 51, 12: 51}


def header(device_id, dcnt):
    """The 8 header bytes of a downlink (also its CCM associated data)."""
    if device_id < 0 or device_id > 0xFFFFFFFF:
        raise FrameError(FRAME_DEVICE, str(device_id))
    if dcnt < 0 or dcnt > MAX_DCNT:
        raise FrameError(FRAME_FCNT, str(dcnt))
    return struct.pack(">BIBH", CONTROL, device_id, dcnt >> 16, dcnt & 0xFFFF)


def encode(device_id, dcnt, cmds, key, block=None):
    """A sealed downlink carrying the command list `cmds` (see the builders below)."""
    if not cmds or len(cmds) > MAX_COMMANDS:
        raise ValueError("a downlink carries 1..4 commands")
    from . import cbor

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


# Command builders

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
    from . import cbor

    fixed = len(cbor.encode([upd_chunk(cmd_id, upd_no, offset, b"")]))
    # A byte string's head grows by one byte at 24 bytes and again at 256.
    data = room - fixed
    if data >= 24:
        data -= 1
    return data


def parse_report(series):
    """(flags, [(command id, result name, detail), ...]) of a report series."""
    entries = []
    for item in series[1:]:
        result = item & 0xF
        name = RESULTS[result] if result < len(RESULTS) else "result_%d" % result
        entries.append((item >> 8, name, (item >> 4) & 0xF))
    return series[0], entries


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
