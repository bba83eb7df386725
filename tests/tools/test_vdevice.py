"""Virtual boards driven by the real mpremote, as a technician drives a USB board."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import serial  # type: ignore[import-untyped]

from knute.tools.sim.vdevice import VirtualBoard, parse_size
from tests.tools.conftest import Mpremote


def _read_until(port: serial.Serial, marker: bytes, timeout_s: float = 10) -> bytes:
    """Bytes from the port up to and including `marker` (test fails on timeout)."""
    data = b""
    deadline = time.monotonic() + timeout_s
    while not data.endswith(marker):
        assert time.monotonic() < deadline, f"no {marker!r} in {data!r}"
        data += port.read(1)
    return data


def test_fs_commands_work_on_the_flash_dir(board: VirtualBoard, mpremote: Mpremote,
                                           tmp_path: Path) -> None:
    src = tmp_path / "hello.py"
    src.write_text("print('hello from the flash')\n")
    blob = tmp_path / "blob.bin"
    blob.write_bytes(bytes(range(256)) * 40)          # every byte value, 10 KB

    assert mpremote(board.port, "fs", "mkdir", ":lib").returncode == 0
    assert mpremote(board.port, "fs", "cp", str(src), ":lib/hello.py").returncode == 0
    assert mpremote(board.port, "fs", "cp", str(blob), ":/blob.bin").returncode == 0
    assert (board.flash_dir / "lib" / "hello.py").read_text() == src.read_text()
    assert (board.flash_dir / "blob.bin").read_bytes() == blob.read_bytes()

    listing = mpremote(board.port, "fs", "ls", ":")
    assert listing.returncode == 0
    assert "lib/" in listing.stdout and "blob.bin" in listing.stdout
    cat = mpremote(board.port, "fs", "cat", ":lib/hello.py")
    assert cat.stdout == src.read_text()
    back = tmp_path / "back.bin"
    assert mpremote(board.port, "fs", "cp", ":blob.bin", str(back)).returncode == 0
    assert back.read_bytes() == blob.read_bytes()

    # /lib is on sys.path as on a board, and "/" is the flash, not the host's root.
    ran = mpremote(board.port, "exec", "import hello, os; print(sorted(os.listdir('/')))")
    assert ran.stdout == "hello from the flash\n['blob.bin', 'lib']\n"

    assert mpremote(board.port, "fs", "rm", ":blob.bin").returncode == 0
    assert not (board.flash_dir / "blob.bin").exists()
    missing = mpremote(board.port, "fs", "cat", ":blob.bin")
    assert missing.returncode != 0 and "No such file" in missing.stderr


def test_exec_reports_mpy_version_and_tracebacks(board: VirtualBoard,
                                                 mpremote: Mpremote) -> None:
    real = subprocess.run([board.micropython, "-c",
                           "import sys; print(sys.implementation._mpy)"],
                          capture_output=True, text=True, timeout=30, check=True).stdout
    got = mpremote(board.port, "exec", "import sys; print(sys.implementation._mpy)")
    assert got.stdout == real
    bad = mpremote(board.port, "exec", "x = 1\n1 / 0")
    assert bad.returncode == 1
    # A board's traceback: the code is <stdin>, and nothing of the REPL agent shows.
    assert bad.stdout.splitlines() == [
        "Traceback (most recent call last):",
        '  File "<stdin>", line 2, in <module>',
        "ZeroDivisionError: divide by zero",
    ]


def test_run_resume_and_soft_reset(board: VirtualBoard, mpremote: Mpremote,
                                   tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text("counter = 41\ncounter += 1\nprint('counter', counter)\n")
    assert mpremote(board.port, "run", str(script)).stdout == "counter 42\n"
    # `resume` skips the soft reset, so the globals of the last run survive ...
    assert mpremote(board.port, "resume", "exec", "print(counter)").stdout == "42\n"
    boots = board.boots
    # ... and a plain connect soft-resets: a fresh interpreter without them.
    fresh = mpremote(board.port, "exec", "print('counter' in globals())")
    assert fresh.stdout == "False\n"
    assert board.boots == boots + 1
    assert mpremote(board.port, "soft-reset").returncode == 0
    assert board.boots == boots + 2


def test_main_py_runs_at_boot_and_ctrl_c_interrupts_it(tmp_path: Path,
                                                       mpremote: Mpremote) -> None:
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "main.py").write_text(
        "import time\n"
        "with open('boots.txt', 'a') as f:\n    f.write('b')\n"
        "while True:\n    time.sleep_ms(5)\n")
    with VirtualBoard(flash) as vboard:
        deadline = time.monotonic() + 10
        while not (flash / "boots.txt").exists():
            assert time.monotonic() < deadline, "main.py did not run at power-on"
            time.sleep(0.05)
        # mpremote's Ctrl-C stops the endless main.py; its soft reset does not rerun it.
        got = mpremote(vboard.port, "exec", "print(open('boots.txt').read())")
        assert got.returncode == 0, got.stderr
        assert got.stdout == "b\n"

        # Ctrl-D in the friendly REPL soft-resets into main.py again, as on a board.
        with serial.Serial(vboard.port, timeout=0.5) as port:
            port.write(b"\r\x03\x02")
            _read_until(port, b'Type "help()" for more information.\r\n>>> ')
            time.sleep(0.2)
            port.reset_input_buffer()       # a prompt from mpremote's goodbye may trail
            port.write(b"6 * 7\r")
            assert _read_until(port, b"42\r\n>>> ") == b"6 * 7\r\n42\r\n>>> "
            port.write(b"\x04")
            _read_until(port, b"MPY: soft reboot\r\n")
            deadline = time.monotonic() + 10
            while (flash / "boots.txt").read_text() != "bb":
                assert time.monotonic() < deadline, "main.py did not run after Ctrl-D"
                time.sleep(0.05)
            port.write(b"\x03")
            report = _read_until(port, b">>> ")
            assert b"KeyboardInterrupt" in report
            assert b'File "main.py"' in report


def test_raw_repl_bytes_as_pyexec_sends_them(board: VirtualBoard) -> None:
    with serial.Serial(board.port, timeout=0.5) as port:
        port.write(b"\r\x03\r\x01")
        _read_until(port, b"raw REPL; CTRL-B to exit\r\n>")
        port.write(b"print(1 + 1)\x04")
        assert _read_until(port, b">") == b"OK2\n\x04\x04>"
        # Raw-paste: R\x01, a 2-byte little-endian window, then \x01 per window.
        port.write(b"\x05A\x01")
        head = port.read(5)
        assert head[:2] == b"R\x01" and head[4:5] == b"\x01"
        window = int.from_bytes(head[2:4], "little")
        code = b"x = " + b"1" * (window + 10) + b"\nprint(len(str(x)))\n"
        port.write(code[:window])
        assert port.read(1) == b"\x01"
        port.write(code[window:] + b"\x04")
        assert _read_until(port, b">") == b"\x04" + str(window + 10).encode() + b"\n\x04\x04>"
        # An empty command is a soft reset into the raw REPL.
        port.write(b"\x04")
        assert _read_until(port, b"raw REPL; CTRL-B to exit\r\n>").startswith(
            b"OK\r\nMPY: soft reboot\r\n")


def test_two_boards_at_once_are_independent(tmp_path: Path, mpremote: Mpremote) -> None:
    with VirtualBoard(tmp_path / "a") as one, VirtualBoard(tmp_path / "b") as two:
        assert one.port != two.port
        assert mpremote(one.port, "exec", "open('who', 'w').write('one')").returncode == 0
        assert mpremote(two.port, "exec", "open('who', 'w').write('two')").returncode == 0
        assert (tmp_path / "a" / "who").read_text() == "one"
        assert (tmp_path / "b" / "who").read_text() == "two"
        both = [mpremote(b.port, "exec", "print(open('who').read())").stdout
                for b in (one, two)]
        assert both == ["one\n", "two\n"]


def test_flash_size_makes_writes_fail_and_statvfs_small(tmp_path: Path, mpremote: Mpremote,
                                                         ) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(20000))
    with VirtualBoard(tmp_path / "flash", flash_size=16 * 1024) as vboard:
        result = mpremote(vboard.port, "fs", "cp", str(big), ":big.bin")
        assert result.returncode != 0
        assert "No space left" in result.stderr
        stat = mpremote(vboard.port, "exec", "import os; s = os.statvfs('/'); print(s[0] * s[2])")
        assert stat.stdout == f"{16 * 1024}\n"


def test_corrupt_writes_flip_a_bit(tmp_path: Path, mpremote: Mpremote) -> None:
    src = tmp_path / "data.txt"
    src.write_bytes(b"A" * 100)
    with VirtualBoard(tmp_path / "flash", corrupt_writes=True) as vboard:
        assert mpremote(vboard.port, "fs", "cp", str(src), ":data.txt").returncode == 0
        landed = (tmp_path / "flash" / "data.txt").read_bytes()
        assert len(landed) == 100 and landed != src.read_bytes()


def test_temporary_flash_is_removed_on_close() -> None:
    vboard = VirtualBoard().start()
    flash = vboard.flash_dir
    assert flash.is_dir()
    vboard.close()
    assert not flash.exists()


def test_cli_prints_json_and_stops_on_sigterm(knute_bin: Path, tmp_path: Path,
                                              mpremote: Mpremote) -> None:
    proc = subprocess.Popen([str(knute_bin), "vdevice", "--json", "--flash", str(tmp_path),
                             "--for", "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert info["flash"] == str(tmp_path.resolve()) and info["pid"] == proc.pid
        assert mpremote(info["port"], "exec", "print('up')").stdout == "up\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert not Path(info["port"]).exists() or not _answers(info["port"])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def _answers(port: str) -> bool:
    try:
        with serial.Serial(port, timeout=0.5) as conn:
            conn.write(b"\r\x01")
            return b"raw REPL" in conn.read(100)
    except (OSError, serial.SerialException):
        return False


@pytest.mark.parametrize(("text", "size"), [("65536", 65536), ("64k", 65536), ("2M", 2097152)])
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size
