# The node's receiving side of downlinks (docs/protocol.md section 12): verify
# a received buffer, keep the downlink counter, apply the commands atomically
# and keep the report the next uplink carries.
#
# Pure of radio timing: firmware.downlink_window opens the receive windows
# and stores what it hears; firmware.downlink_apply hands it to
# Downlink.receive() in the restart in place. Module updates live apart in
# firmware.downlink_update, loaded only by an OP_UPD_* command; the report
# and alarm bookkeeping that the running node does in
# firmware.downlink_window is firmware.downlink_model's, for tests and tools
# (fewer names here: docs/firmware.md, "The downlink path's heap").
#
# What is written where, each write atomic (temporary file, then rename):
#   state/dcnt.json     {"last": n}  the highest downlink counter accepted
#   state/dlrep.json    report entries not yet sent in an uplink
#   state/clock.json    {"offset_ms": n}  wall clock minus the board's time
#   state/alarm.json    {"bits": b, "repeats": n}  alarms waiting for an ack
#   state/adr.json      the data-rate back-off's record (firmware.downlink_window)
#   config.json         configuration values and keys ("key", "key_no",
#                       and during a rotation "key_next", "key_no_next")
# The counter is stored before any command is applied, so a power cut can
# lose a command (the gateway sends it again: it saw no report) but can never
# let the same downlink be applied twice.

import json
import os

from protocol import ccm
from protocol import downlink as dl
from protocol.errors import FrameError

try:
    from micropython import const
except ImportError:  # CPython (type checks, host tools): const(x) is x
    const = int


# protocol.downlink_send's numbers (docs/protocol.md section 12), as consts
# that take no RAM; tests/protocol/test_downlink.py checks them against it.
_APPLIED = const(0)
_CMD_ARGS = const(2)
_CMD_KEY = const(4)
_CMD_RANGE = const(3)
_CMD_STALE = const(7)
_CMD_STATE = const(5)
_CMD_UNKNOWN = const(1)
_MAX_CONFIG = const(4)
_MAX_REPORT = const(8)
_OP_ACK_ALARM = const(3)
_OP_CLOCK = const(1)
_OP_CONFIG = const(2)
_OP_REBOOT = const(6)
_OP_REKEY = const(4)
_OP_REKEY_DONE = const(5)
_OP_UPD_BEGIN = const(7)
_OP_UPD_SWITCH = const(9)


def write_atomic(path, text, pause=None):
    # firmware.downlink_files.write_atomic, repeated here: that module's other
    # names (module sets, for updates only) would be interned for good by
    # every apply, and they push a LoRa node past 620 (docs/firmware.md).
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        if pause is not None:
            half = len(text) // 2
            handle.write(text[:half])
            handle.flush()
            pause(path)
            handle.write(text[half:])
        else:
            handle.write(text)
    os.rename(tmp, path)


class Downlink:
    """Verify and apply downlinks for one node; keep its clock and its report."""

    def __init__(self, store, device_id, config_path, time_ms, upd_root="upd", lib="lib",
                 pause=None):
        self.store = store
        self.device_id = device_id
        self.config_path = config_path
        self.time_ms = time_ms     # board time in ms (the HAL's time_ms)
        self.upd_root = upd_root
        self.lib = lib
        self.pause = pause          # bench only: pause(step) between the steps of an apply
        self.counts = {}            # reject reason -> count since boot
        rec = store.get("dcnt")
        self.last = rec["last"] if isinstance(rec, dict) and isinstance(rec.get("last"), int) \
            else -1
        rep = store.get("dlrep")
        self.entries = rep if isinstance(rep, list) else []
        rec = store.get("clock")
        self.offset_ms = rec.get("offset_ms") if isinstance(rec, dict) else None
        self.clock_set = False      # set by OP_CLOCK since boot
        rec = store.get("alarm")
        self.alarm_bits = rec.get("bits", 0) if isinstance(rec, dict) else 0
        self.alarm_repeats = rec.get("repeats", 0) if isinstance(rec, dict) else 0
        self.reboot = False         # OP_REBOOT applied: reset once the caller is ready
        self.changed = []           # (section, key) applied since boot (live or at next boot)
        self.up_fcnt = None         # the last uplink's counter and board time at its end
        self.up_end_ms = None
        self._load_keys()

    # ------------------------------------------------------------------ keys

    def _read_config(self):
        with open(self.config_path) as handle:
            return json.loads(handle.read())

    def _write_config(self, raw):
        write_atomic(self.config_path, json.dumps(raw), self.pause)

    def _load_keys(self):
        raw = self._read_config()
        self.role = raw.get("role")
        self.link_type = (raw.get("link") or {}).get("type", "uart")
        self.key = bytes.fromhex(raw["key"])
        self.key_no = raw.get("key_no", 0)
        self.key_next = None
        self.key_no_next = None
        if raw.get("key_next"):
            self.key_next = bytes.fromhex(raw["key_next"])
            self.key_no_next = raw.get("key_no_next", self.key_no + 1)
        self._block = ccm.aes_block(self.key)
        self._block_next = ccm.aes_block(self.key_next) if self.key_next else None

    # ----------------------------------------------------------- the clock

    def uplink_sent(self, fcnt, end_ms=None):
        """Note that uplink `fcnt` ended at board time `end_ms` (default: now)."""
        self.up_fcnt = fcnt
        self.up_end_ms = self.time_ms() if end_ms is None else end_ms

    # ------------------------------------------------------------- alarms

    def _put_alarm(self):
        self.store.put("alarm", {"bits": self.alarm_bits, "repeats": self.alarm_repeats})

    # ------------------------------------------------------------ receive

    def _reject(self, reason):
        self.counts[reason] = self.counts.get(reason, 0) + 1
        return reason

    def receive(self, buf):
        """Verify and apply one received downlink; None when accepted, else the reason.

        An accepted downlink may still carry rejected commands: each command's
        result goes into the report.
        """
        try:
            device_id, dcnt = dl.parse_header(buf)
        except FrameError as err:
            return self._reject(err.reason)
        if device_id != self.device_id:
            return self._reject("dl_device")
        plain = None
        under_next = False
        for block, is_next in ((self._block_next, True), (self._block, False)):
            if block is None:
                continue
            try:
                plain = dl.open_with(buf, device_id, dcnt, block)
                under_next = is_next
                break
            except FrameError:
                pass
        if plain is None:
            return self._reject("dl_forged")
        try:
            cmds = dl.commands(plain)
        except FrameError as err:
            return self._reject(err.reason)
        if dcnt == self.last:
            return self._reject("dl_replay")
        if dcnt < self.last:
            return self._reject("dl_order")
        # Stored before anything is applied: no downlink is ever applied twice.
        self.store.put("dcnt", {"last": dcnt})
        self.last = dcnt
        if self.pause is not None:
            self.pause("counter")
        if under_next:
            # Only a gateway that accepted an uplink under the new key seals with it.
            self._commit_key()
        results = []
        for cmd in cmds:
            results.extend(self._apply(cmd))
        self.entries = (self.entries + results)[-_MAX_REPORT:]
        self.store.put("dlrep", self.entries)
        return None

    def _apply(self, cmd):
        cmd_id = cmd[0]
        op = cmd[1]
        args = cmd[2:]
        if op == _OP_CONFIG:
            return self._config(cmd_id, args)
        if op == _OP_CLOCK:
            result = self._clock(args)
        elif op == _OP_ACK_ALARM:
            result = self._ack(args)
        elif op == _OP_REKEY:
            result = self._rekey(args)
        elif op == _OP_REKEY_DONE:
            result = self._rekey_done(args)
        elif op == _OP_REBOOT:
            result = _CMD_ARGS if args else _APPLIED
            self.reboot = self.reboot or not args
        elif _OP_UPD_BEGIN <= op <= _OP_UPD_SWITCH:
            from firmware import downlink_update

            updater = downlink_update.Updater(self.upd_root, self.lib, self.pause)
            result = updater.command(op, args)
            if op == _OP_UPD_SWITCH and result == _APPLIED:
                self.reboot = True  # the new set runs from the next boot
        else:
            result = _CMD_UNKNOWN
        return [dl.report_entry(cmd_id, result)]

    # ------------------------------------------------------------ commands

    def _clock(self, args):
        if len(args) != 3 or not _uints(args) or args[2] > 999:
            return _CMD_ARGS
        up_fcnt, unix_s, ms = args
        if self.up_end_ms is None or up_fcnt != self.up_fcnt:
            return _CMD_STALE
        # The gateway's time of the uplink's end, against the board's time then:
        # airtime and the receive-window delay are inside the difference.
        self.offset_ms = unix_s * 1000 + ms - self.up_end_ms
        self.store.put("clock", {"offset_ms": self.offset_ms})
        self.clock_set = True
        return _APPLIED

    def _ack(self, args):
        if len(args) != 1 or not _uints(args):
            return _CMD_ARGS
        if self.alarm_bits & args[0]:
            self.alarm_bits &= ~args[0]
            self.alarm_repeats = 0
            self._put_alarm()
        return _APPLIED

    def _rekey(self, args):
        if len(args) != 2 or not _uints(args[:1]) or not isinstance(args[1], bytes) \
                or len(args[1]) != 16:
            return _CMD_ARGS
        key_no, new_key = args
        if new_key == self.key or (self.key_next is not None and new_key == self.key_next):
            return _APPLIED       # a repeat: the rotation is already staged or done
        if self.key_next is not None:
            return _CMD_STATE     # one rotation at a time
        from binascii import hexlify

        raw = self._read_config()
        raw["key_next"] = hexlify(new_key).decode()
        raw["key_no_next"] = key_no
        self._write_config(raw)
        self._load_keys()
        return _APPLIED

    def _rekey_done(self, args):
        if len(args) != 1 or not _uints(args):
            return _CMD_ARGS
        # receive() has already committed the key if this frame came under the new one.
        if self.key_next is None and args[0] == self.key_no:
            return _APPLIED
        return _CMD_STATE

    def _commit_key(self):
        raw = self._read_config()
        raw["key"] = raw.pop("key_next")
        raw["key_no"] = raw.pop("key_no_next", self.key_no + 1)
        self._write_config(raw)
        self._load_keys()

    def _config(self, cmd_id, args):
        if len(args) != 1 or not isinstance(args[0], dict) or not args[0] \
                or len(args[0]) > _MAX_CONFIG:
            return [dl.report_entry(cmd_id, _CMD_ARGS)]
        values = args[0]
        raw = self._read_config()
        rejects = []
        for code in sorted(values):
            row = dl.config_entry(code)
            # The code's section must be the role's, or radio on a LoRa link.
            section = None if row is None else row[1]
            if section is None or not (
                    self.role == "water_meter" if section == "water"
                    else self.role == "air_quality" if section == "air"
                    else self.link_type == "lora"):
                result = _CMD_KEY
            else:
                result = dl.config_check(code, values[code])
            if result:
                rejects.append(dl.report_entry(cmd_id, result, code))
        if not rejects and self.role == "water_meter" and (1 in values or 2 in values):
            water = raw.get("water") or {}
            spd = values.get(1, water.get("sends_per_day", 4))
            plen = values.get(2, water.get("profile_len", 6))
            if plen < 24 // spd:    # the hours between two sends must fit in one profile
                rejects.append(dl.report_entry(cmd_id, _CMD_RANGE,
                                               2 if 2 in values else 1))
        if rejects:
            return rejects          # all or nothing: one bad value and none is applied
        was = None
        if 11 in values or 12 in values:     # radio.sf, radio.power_dbm (LoRa only)
            was = raw.get("radio") or {}
            was = [was.get("sf", 9), was.get("power_dbm", 14)]   # RADIO_DEFAULTS'
        for code in sorted(values):
            row = dl.config_entry(code)
            section = raw.get(row[1])
            if not isinstance(section, dict):
                section = {}
                raw[row[1]] = section
            section[row[2]] = values[code]
            self.changed.append((row[1], row[2]))
        self._write_config(raw)
        if was is not None:
            from firmware import downlink_radio

            downlink_radio.note(self.store, was, raw["radio"], self.last)
        return [dl.report_entry(cmd_id, _APPLIED)]


def _uints(values):
    for value in values:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            return False
    return True
