# Firmware-module updates by downlink (docs/protocol.md section 12.8): staging
# a bundle from chunks, checking every module by SHA-256, switching module
# sets atomically, and the boot hook that rolls a set back when it never
# reaches a completed send.
#
# On the flash (all under upd/):
#   stage.json     {"upd_no", "size", "have"}: the bundle being staged
#   bundle.bin     its bytes so far
#   s<n>/          module set n: a full copy of lib/ (firmware/, protocol/)
#                  with the bundle's modules written over it
#   manifest.json  {"active", "previous", "upd_no", "confirmed", "tries"}:
#                  the one file that says which set runs. Replacing it by a
#                  rename is the switch, so a power cut at any point leaves
#                  the old set or the new one running, never a mix.
# A set folder the manifest does not name is the remains of a cut build and
# is removed at boot.

import os
import sys

from firmware.downlink_files import (
    exists,
    make_dirs,
    read_json,
    remove_tree,
    write_atomic,
)

try:
    from micropython import const
except ImportError:  # CPython (type checks, host tools): const(x) is x
    const = int

TRIAL_BOOTS = const(3)   # boots a new set gets to complete a send before it is rolled back
_BUF = const(256)
# protocol.downlink_send's numbers, as consts that take no RAM (checked by
# tests/protocol/test_downlink.py).
_APPLIED = const(0)
_CMD_ARGS = const(2)
_CMD_HASH = const(6)
_CMD_ORDER = const(8)
_CMD_RANGE = const(3)
_CMD_STATE = const(5)
_CMD_UNKNOWN = const(1)
_MAX_BUNDLE = const(65535)
_OP_UPD_BEGIN = const(7)
_OP_UPD_CHUNK = const(8)
_OP_UPD_SWITCH = const(9)


def _manifest(root):
    m = read_json(root + "/manifest.json")
    return m if isinstance(m, dict) else None


def _put(path, value, pause=None):
    import json

    write_atomic(path, json.dumps(value), pause)


def boot_hook(root="upd", trial_boots=TRIAL_BOOTS):
    """The module set to run, or None for lib/; call before any other firmware import.

    Counts a boot of an unconfirmed set and rolls back to the previous set
    once it has had `trial_boots` boots without confirm(). Returns (folder or
    None, number of the update rolled back or None). Removes set folders the
    manifest does not name.
    """
    m = _manifest(root)
    rolled_back = None
    if m is not None and not m.get("confirmed"):
        tries = m.get("tries", 0)
        if tries >= trial_boots:
            rolled_back = m.get("upd_no")
            m = {"active": m.get("previous", ""), "previous": "", "upd_no": None,
                 "confirmed": True, "rolled_back": rolled_back}
        else:
            m["tries"] = tries + 1
        _put(root + "/manifest.json", m)
    keep = ()
    if m is not None:
        keep = (m.get("active"), m.get("previous"))
    try:
        names = os.listdir(root)
    except OSError:
        names = ()
    for name in names:
        path = root + "/" + name
        if name[:1] == "s" and name[1:].isdigit() and path not in keep:
            remove_tree(path)
    active = m.get("active") if m is not None else None
    return (active or None), rolled_back


def hook(root="upd"):
    """The boot hook as firmware.app runs it: True when a set other than lib/ is active.

    Counts the boot, rolls an unconfirmed set back after TRIAL_BOOTS boots
    (and says so on the console), and activates the set that runs.
    """
    folder, rolled_back = boot_hook(root)
    if rolled_back is not None:
        print("knute: module update %s rolled back: %d boots without a completed send"
              % (rolled_back, TRIAL_BOOTS))
    if folder:
        activate(folder)
        return True
    return False


def activate(folder, lib="lib"):
    """Put module set `folder` before `lib` on sys.path and drop loaded firmware modules."""
    pos = sys.path.index(lib) if lib in sys.path else 1
    sys.path.insert(pos, folder)
    for name in list(sys.modules):
        if name.split(".")[0] in ("firmware", "protocol"):
            del sys.modules[name]


def confirm(root="upd"):
    """A send completed under the running set: it is kept (call from the app)."""
    m = _manifest(root)
    if m is not None and not m.get("confirmed"):
        m["confirmed"] = True
        _put(root + "/manifest.json", m)
        return True
    return False


class Updater:
    """The OP_UPD_* commands against the staging folder `root`."""

    def __init__(self, root="upd", lib="lib", pause=None):
        self.root = root
        self.lib = lib
        self.pause = pause          # bench only: pause(step) between steps
        make_dirs(root)

    def _step(self, name):
        if self.pause is not None:
            self.pause(name)

    def command(self, op, args):
        """Apply one OP_UPD_* command (arguments after the op); a result code."""
        for value in args[:2]:
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                return _CMD_ARGS
        stage = read_json(self.root + "/stage.json")
        if not isinstance(stage, dict):
            stage = None
        if op == _OP_UPD_BEGIN:
            if len(args) != 2:
                return _CMD_ARGS
            if args[1] < 1 or args[1] > _MAX_BUNDLE:
                return _CMD_RANGE
            if stage is not None and stage["upd_no"] == args[0] and stage["size"] == args[1]:
                return _APPLIED       # a repeat: keep what is staged
            with open(self.root + "/bundle.bin", "wb"):
                pass
            _put(self.root + "/stage.json", {"upd_no": args[0], "size": args[1], "have": 0},
                 self.pause)
            return _APPLIED
        if op == _OP_UPD_CHUNK:
            if len(args) != 3 or not isinstance(args[2], bytes) or not args[2]:
                return _CMD_ARGS
            if stage is None or stage["upd_no"] != args[0]:
                return _CMD_STATE
            offset, data = args[1], args[2]
            end = offset + len(data)
            if end > stage["size"]:
                return _CMD_RANGE
            if end <= stage["have"]:
                return _APPLIED       # a repeat of staged bytes
            if offset > stage["have"]:
                return _CMD_ORDER
            with open(self.root + "/bundle.bin", "r+b") as handle:
                handle.seek(offset)
                handle.write(data)
            stage["have"] = end
            _put(self.root + "/stage.json", stage, self.pause)
            return _APPLIED
        if op == _OP_UPD_SWITCH:
            if len(args) != 1:
                return _CMD_ARGS
            m = _manifest(self.root)
            if stage is None:
                if m is not None and m.get("upd_no") == args[0]:
                    return _APPLIED   # a repeat: already switched
                return _CMD_STATE
            if stage["upd_no"] != args[0] or stage["have"] != stage["size"]:
                return _CMD_STATE
            return self._switch(args[0], stage["size"], m)
        return _CMD_UNKNOWN

    def _switch(self, upd_no, size, m):
        active = (m.get("active") if m is not None else "") or ""
        folder = self.root + "/s%d" % upd_no
        if folder == active:
            return _CMD_STATE
        remove_tree(folder)
        buf = bytearray(_BUF)
        from firmware.downlink_files import copy_tree

        source = active or self.lib
        for top in ("firmware", "protocol"):
            copy_tree(source + "/" + top, folder + "/" + top, buf)
        self._step("copied")
        result = self._unpack(folder, size, buf)
        if result != _APPLIED:
            remove_tree(folder)
            self._drop_stage()
            return result
        self._step("unpacked")
        _put(self.root + "/manifest.json", {"active": folder, "previous": active,
                                           "upd_no": upd_no, "confirmed": False, "tries": 0},
             self.pause)
        self._step("switched")
        self._drop_stage()
        if m is not None and m.get("previous") and m.get("previous") != active:
            remove_tree(m["previous"])
        return _APPLIED

    def _drop_stage(self):
        for name in ("stage.json", "bundle.bin"):
            if exists(self.root + "/" + name):
                os.remove(self.root + "/" + name)

    def _unpack(self, folder, size, buf):
        # Every module is written into the new set, which nothing runs yet, and
        # its SHA-256 compared; one mismatch and the whole set is dropped.
        import hashlib
        import struct

        from protocol.downlink_path import path_ok

        pos = 0
        view = memoryview(buf)
        with open(self.root + "/bundle.bin", "rb") as bundle:
            while pos < size:
                head = bundle.read(1)
                if len(head) != 1:
                    return _CMD_ARGS
                raw = bundle.read(head[0])
                meta = bundle.read(36)
                if len(raw) != head[0] or len(meta) != 36:
                    return _CMD_ARGS
                try:
                    path = raw.decode()
                except UnicodeError:
                    return _CMD_ARGS
                if not path_ok(path):
                    return _CMD_ARGS
                length = struct.unpack(">I", meta[:4])[0]
                pos += 1 + len(raw) + 36 + length
                if pos > size:
                    return _CMD_ARGS
                target = folder + "/" + path
                make_dirs(target.rsplit("/", 1)[0])
                # A .py beside an .mpy of the same module: only the new one may stay.
                other = target[:-3] + ".mpy" if target.endswith(".py") else target[:-4] + ".py"
                if exists(other):
                    os.remove(other)
                digest = hashlib.sha256()
                left = length
                with open(target, "wb") as out:
                    while left:
                        n = bundle.readinto(view[:min(left, _BUF)])
                        if not n:
                            return _CMD_ARGS
                        digest.update(view[:n])
                        out.write(view[:n])
                        left -= n
                if digest.digest() != meta[4:]:
                    return _CMD_HASH
        return _APPLIED
