# mypy: ignore-errors
# The board side of a virtual board (`knute vdevice`): runs INSIDE the
# MicroPython unix port and makes it answer on its stdin/stdout the way a
# MicroPython board answers on its USB serial port.
#
#   micropython tools/sim/vdevice_repl.py \
#       FLASH_DIR MODE NOTES_FD FLASH_SIZE|- CORRUPT(0|1) [BIND ...]
#
# MODE is "friendly" (power-on or soft reset from the friendly REPL: run boot.py
# and main.py, then the friendly REPL), "raw" (soft reset from the raw REPL:
# boot.py only, then the raw REPL, as mpremote expects) or "interrupted"
# (friendly, but main.py was interrupted before it started).
#
# The protocol is the one of MicroPython's shared/runtime/pyexec.c, byte for
# byte: raw REPL (Ctrl-A, "raw REPL; CTRL-B to exit\r\n>", code, Ctrl-D, "OK",
# output, \x04, error output, \x04, ">"), raw-paste mode (Ctrl-E 'A' Ctrl-A ->
# "R\x01", 2-byte window size, \x01 per window consumed, \x04 at the end) and
# soft reset (Ctrl-D on an empty line -> "OK\r\n" / "\r\n", then
# "MPY: soft reboot\r\n"). The host-side supervisor (tools/sim/vdevice.py) restarts
# the interpreter when this script exits for a soft reset and turns Ctrl-C into
# SIGINT while code runs, so a running program stops with KeyboardInterrupt as
# on a board.
#
# The flash directory is mounted at "/" (os.VfsPosix with a root), so "/main.py",
# "/lib/..." and relative paths all land in the flash directory, and sys.path is
# a board's ['', '.frozen', '/lib'].
#
# File descriptor NOTES_FD carries one-byte state notes to the supervisor:
#   I  waiting for input (a Ctrl-C from the host is an ordinary byte)
#   X  running code (a Ctrl-C from the host becomes SIGINT)
#   F / W  now in the friendly / raw REPL (output translation of "\n")
#
# Why one file of ~530 lines: the unix port runs it as a script from a flash
# directory mounted at "/", where the host tree is not on sys.path, so everything
# the board side needs (flash VFS, raw REPL, raw paste, friendly REPL, boot) has
# to travel in this one file.

import os
import sys

try:
    import errno

    _ENOSPC = errno.ENOSPC
except (ImportError, AttributeError):
    _ENOSPC = 28

_EXIT_RAW = 10          # exit codes for the supervisor: soft reset into the raw REPL
_EXIT_FRIENDLY = 11     # soft reset into the friendly REPL
_WINDOW = 256           # raw-paste flow-control window (bytes)
_AGENT = __file__ if "__file__" in globals() else "vdevice_repl.py"

_stdin = sys.stdin.buffer
_stdout = sys.stdout.buffer
_byte = bytearray(1)
try:
    _notes = open(int(sys.argv[3]), "wb")  # noqa: SIM115 - open for the whole run
except (OSError, IndexError, ValueError):
    _notes = None
_note_state = b""


def note(state):
    """Tell the supervisor what the board is doing (see the table above)."""
    global _note_state
    if _notes is not None and state != _note_state:
        _note_state = state
        _notes.write(state)


def out(data):
    if isinstance(data, str):
        data = data.encode()
    _stdout.write(data)


def getc():
    """The next byte from the host; 3 (Ctrl-C) when a SIGINT arrives instead."""
    if _note_state != b"I":
        note(b"I")
    try:
        n = _stdin.readinto(_byte)
    except KeyboardInterrupt:
        return 3
    if not n:
        # The supervisor closed our stdin: it is shutting the board down.
        sys.exit(0)
    return _byte[0]


# ---------------------------------------------------------------- the flash


class _FlashFile:
    """A file open for writing on a flash that has a size limit or corrupts writes."""

    def __init__(self, vfs, raw):
        self._vfs = vfs
        self._raw = raw

    def write(self, data):
        size = len(data)
        vfs = self._vfs
        if vfs.size is not None and vfs.used() + size > vfs.size:
            raise OSError(_ENOSPC)
        if vfs.corrupt and size:
            buf = bytearray(data) if not isinstance(data, str) else bytearray(data.encode())
            buf[len(buf) // 2] ^= 0x20
            data = bytes(buf) if not isinstance(data, str) else buf.decode()
        self._raw.write(data)
        return size

    def close(self):
        self._raw.close()

    def flush(self):
        self._raw.flush()

    def read(self, *args):
        return self._raw.read(*args)

    def readinto(self, buf):
        return self._raw.readinto(buf)

    def readline(self):
        return self._raw.readline()

    def seek(self, *args):
        return self._raw.seek(*args)

    def tell(self):
        return self._raw.tell()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._raw.close()

    def __iter__(self):
        return iter(self._raw)


class FlashVfs:
    """VfsPosix over the flash directory with a size limit and/or corrupted writes."""

    def __init__(self, root, size, corrupt):
        self._posix = os.VfsPosix(root)
        self.size = size
        self.corrupt = corrupt

    def used(self):
        return self._tree_bytes("/")

    def _tree_bytes(self, path):
        total = 0
        for entry in self._posix.ilistdir(path):
            name, kind = entry[0], entry[1]
            full = path.rstrip("/") + "/" + name
            if kind == 0x4000:
                total += 512 + self._tree_bytes(full)
            else:
                total += self._posix.stat(full)[6]
        return total

    def mount(self, readonly, mkfs):
        pass

    def umount(self):
        pass

    def open(self, path, mode):
        raw = self._posix.open(path, mode)
        if "w" in mode or "a" in mode or "+" in mode:
            return _FlashFile(self, raw)
        return raw

    def statvfs(self, path):
        st = self._posix.statvfs(path)
        if self.size is None:
            return st
        bsize = 512
        blocks = self.size // bsize
        free = max(0, (self.size - self.used()) // bsize)
        return (bsize, bsize, blocks, free, free, 0, 0, 0, 0, st[9])

    def ilistdir(self, path):
        return self._posix.ilistdir(path)

    def stat(self, path):
        return self._posix.stat(path)

    def mkdir(self, path):
        if self.size is not None and self.used() + 512 > self.size:
            raise OSError(_ENOSPC)
        return self._posix.mkdir(path)

    def rmdir(self, path):
        return self._posix.rmdir(path)

    def remove(self, path):
        return self._posix.remove(path)

    def rename(self, old, new):
        return self._posix.rename(old, new)

    def chdir(self, path):
        return self._posix.chdir(path)

    def getcwd(self):
        return self._posix.getcwd()


def mount_flash(flash_dir, size, corrupt, binds):
    """Make the flash directory the board's "/" (host directories in `binds` stay visible)."""
    os.umount("/")
    # Mount points are searched in the order they were mounted and "/" matches
    # everything, so the host directories go first.
    for path in binds:
        os.mount(os.VfsPosix(path), path)
    if size is None and not corrupt:
        os.mount(os.VfsPosix(flash_dir), "/")
    else:
        os.mount(FlashVfs(flash_dir, size, corrupt), "/")
    os.chdir("/")
    sys.path[:] = ["", ".frozen", "/lib"]


# ---------------------------------------------------------------- running code

_board_globals = {"__name__": "__main__"}


def print_exception(exc):
    """A traceback as a board prints it: without this agent's own frames."""
    import io

    buf = io.StringIO()
    sys.print_exception(exc, buf)
    for line in buf.getvalue().split("\n"):
        if line and _AGENT not in line:
            out(line + "\n")


def execute(source, filename, mode, print_eof):
    """Compile and run code like pyexec's parse_compile_execute.

    Returns None, or the status of the SystemExit that ended the code.
    """
    status = None
    note(b"X")
    try:
        try:
            code = compile(source, filename, mode)
            if filename != "<stdin>":
                _board_globals["__file__"] = filename
            exec(code, _board_globals)
            if print_eof:
                out(b"\x04")
        except SystemExit as exc:
            status = exc.args[0] if exc.args else 0
            if print_eof:
                out(b"\x04")
        except BaseException as exc:
            if print_eof:
                out(b"\x04")
            print_exception(exc)
    except KeyboardInterrupt:
        # A second Ctrl-C while the first one's traceback was being printed.
        pass
    if print_eof:
        out(b"\x04")
    return status


def run_file(name):
    """Run boot.py/main.py from the flash if it exists; True if it asked for a reset.

    The bench HAL ends a program with SystemExit: status 4 is its machine.reset()
    and resets the board; any other status stops the program, and the board
    stays in the REPL (where a board in safe mode would wait) instead of
    rebooting into the same failure forever.
    """
    try:
        with open(name) as handle:
            source = handle.read()
    except OSError:
        return False
    except KeyboardInterrupt:
        return False
    status = execute(source, name, "exec", False)
    if status is None:
        return False
    if status == 4:
        return True
    out(name + " exited with status " + str(status) + "\r\n")
    return False


# ---------------------------------------------------------------- raw REPL


def raw_paste(command):
    """Raw-paste mode (Ctrl-E <command> Ctrl-A in the raw REPL); a SystemExit status or None."""
    if command != 0x41:  # 'A'
        out(b"R\x00")
        return None
    out(b"R\x01")
    out(bytes((_WINDOW & 0xFF, _WINDOW >> 8, 0x01)))
    remain = _WINDOW
    code = bytearray()
    while True:
        c = getc()
        if c == 3 or c == 4:
            out(b"\x04")
            if c == 3:
                out(b"\x04")
                out('Traceback (most recent call last):\n  File "<stdin>"\n')
                out("KeyboardInterrupt: \n")
                out(b"\x04")
                return None
            break
        code.append(c)
        remain -= 1
        if remain == 0:
            out(b"\x01")
            remain = _WINDOW
    return execute(bytes(code), "<stdin>", "exec", True)


def raw_repl():
    """The raw REPL; returns an exit code for the supervisor or None for the friendly REPL."""
    note(b"W")
    out("raw REPL; CTRL-B to exit\r\n")
    line = bytearray()
    while True:
        line = bytearray()
        out(">")
        while True:
            c = getc()
            if c == 1:
                if len(line) == 2 and line[0] == 5:
                    if raw_paste(line[1]) is not None:
                        out("MPY: soft reboot\r\n")
                        return _EXIT_RAW
                    line = bytearray()
                    out(">")
                    continue
                out("raw REPL; CTRL-B to exit\r\n")
                line = bytearray()
                out(">")
                continue
            if c == 2:
                out("\r\n")
                return None
            if c == 3:
                line = bytearray()
            elif c == 4:
                break
            else:
                line.append(c)
        out("OK")
        if not line:
            out("\r\n")
            out("MPY: soft reboot\r\n")
            return _EXIT_RAW
        if execute(bytes(line), "<stdin>", "exec", True) is not None:
            out("MPY: soft reboot\r\n")
            return _EXIT_RAW


# ---------------------------------------------------------------- friendly REPL


def banner():
    version = sys.version.split("; ")[-1]
    out(version + "; " + sys.implementation._machine + " (knute virtual board)\r\n")
    out('Type "help()" for more information.\r\n')


def continues(text):
    """Whether the REPL should ask for another line (like mp_repl_continue_with_input)."""
    lines = text.split("\n")
    if len(lines) > 1:
        return lines[-1] != ""
    last = lines[-1].rstrip()
    if last.endswith(":") or last.endswith("\\") or last.startswith("@"):
        return True
    depth = 0
    quote = None
    for ch in text:
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
    return depth > 0 or text.count('"""') % 2 == 1 or text.count("'''") % 2 == 1


def readline(prompt):
    """One edited line; returns (control char or 0, text)."""
    out(prompt)
    text = bytearray()
    escape = 0
    while True:
        c = getc()
        if escape:
            # Swallow VT100 sequences (arrows etc.): ESC [ ... final byte.
            escape = 2 if c == 0x5B and escape == 1 else 0 if 0x40 <= c <= 0x7E else 2
            continue
        if c == 0x1B:
            escape = 1
        elif c in (1, 2, 3, 5):
            return c, text.decode()
        elif c == 4:
            if not text:
                return 4, ""
        elif c == 13:
            out("\r\n")
            return 0, text.decode()
        elif c in (8, 127):
            if text:
                text = text[:-1]
                out(b"\x08 \x08")
        elif c >= 32:
            text.append(c)
            out(bytes((c,)))


def paste_mode():
    out("\r\npaste mode; Ctrl-C to cancel, Ctrl-D to finish\r\n=== ")
    code = bytearray()
    while True:
        c = getc()
        if c == 3:
            out("\r\n")
            return None
        if c == 4:
            out("\r\n")
            return bytes(code)
        code.append(c)
        out("\r\n=== " if c == 13 else bytes((c,)))


def friendly_repl(show_banner):
    """The friendly REPL; returns an exit code for the supervisor or None for the raw REPL."""
    note(b"F")
    if show_banner:
        banner()
    while True:
        note(b"F")
        ctrl, text = readline(">>> ")
        if ctrl == 1:
            out("\r\n")
            return None
        if ctrl == 2:
            out("\r\n")
            banner()
            continue
        if ctrl == 3:
            out("\r\n")
            continue
        if ctrl == 4:
            out("\r\n")
            out("MPY: soft reboot\r\n")
            return _EXIT_FRIENDLY
        if ctrl == 5:
            code = paste_mode()
            if code is None:
                continue
            mode = "exec"
            source = code
        else:
            if not text:
                continue
            cancelled = False
            while continues(text):
                ctrl, more = readline("... ")
                if ctrl == 3:
                    out("\r\n")
                    cancelled = True
                    break
                if ctrl == 4:
                    break
                text = text + "\n" + more
            if cancelled:
                continue
            mode = "single"
            source = text + "\n"
        if execute(source, "<stdin>", mode, False) is not None:
            out("MPY: soft reboot\r\n")
            return _EXIT_FRIENDLY


# ---------------------------------------------------------------- boot


def main():
    args = sys.argv[1:]
    flash_dir = args[0]
    mode = args[1]
    size = int(args[3]) if len(args) > 3 and args[3] != "-" else None
    corrupt = len(args) > 4 and args[4] == "1"
    binds = args[5:]
    note(b"X")
    try:
        mount_flash(flash_dir, size, corrupt, binds)
        if run_file("boot.py"):
            out("MPY: soft reboot\r\n")
            return _EXIT_FRIENDLY
        if mode == "friendly" and run_file("main.py"):
            out("MPY: soft reboot\r\n")
            return _EXIT_FRIENDLY
    except KeyboardInterrupt:
        pass
    raw = mode == "raw"
    while True:
        try:
            code = raw_repl() if raw else friendly_repl(True)
        except KeyboardInterrupt:
            # A Ctrl-C that raced with the end of a program: stay in the same REPL.
            continue
        if code is not None:
            return code
        raw = not raw


def run():
    try:
        code = main()
    except KeyboardInterrupt:
        code = _EXIT_FRIENDLY
    sys.exit(code)


run()
