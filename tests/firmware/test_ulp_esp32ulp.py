"""The ULP pulse counter assembled by micropython-esp32-ulp equals tools/ulp.py's image.

micropython-esp32-ulp (PyPI; `make bootstrap` unpacks it into .venv/lib/micropython,
requirements-upy.txt says why) runs on the real unix port, 64- and 32-bit: it
assembles tools/ulp.source() for several input wirings and the ESP-IDF binary
it links must be byte for byte what ``ulp.image()`` writes to a board. So the
instruction words the ULP model runs (tests/firmware/test_ulp_counter.py) are
the ones that assembler makes from the same source.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from knute.tools import ulp

UPY_LIB = Path(sys.executable).parent.parent / "lib" / "micropython"

# The package imports btree at load time for its #define database, which it only
# opens when a defines.db file exists in the working folder (none here); the unix
# ports are built without btree, so the run gets a module that refuses to open one.
BTREE = 'def open(*args):\n    raise OSError("no btree on this build")\n'

ASSEMBLE = """
import sys
import esp32_ulp
for name in sys.argv[1:]:
    with open(name + ".S") as handle:
        binary = esp32_ulp.src_to_binary(handle.read())
    with open(name + ".ulp", "wb") as handle:
        handle.write(binary)
"""

# (pulse, direction, tamper RTC GPIO, tamper active level): the meter board's wiring
# (firmware/boards/meter_esp32.py), the model tests', and the extremes of the field.
WIRINGS = [(9, 8, 6, 1), (10, 11, 12, 1), (0, 17, 5, 1), (17, 0, 16, 0)]


def test_the_meter_board_wiring_is_listed() -> None:
    from firmware.boards import meter_esp32

    pins = meter_esp32.PINS
    rtc = tuple(ulp.RTC_GPIO[pins[name]] for name in ("pulse", "direction", "tamper"))
    assert rtc == WIRINGS[0][:3]


def test_esp32ulp_assembles_the_image_tools_ulp_writes(tmp_path: Path,
                                                       micropython_bin: Path) -> None:
    assert (UPY_LIB / "esp32_ulp" / "__init__.py").is_file(), (
        f"micropython-esp32-ulp is not in {UPY_LIB}: run `make bootstrap`")
    (tmp_path / "btree.py").write_text(BTREE)
    (tmp_path / "assemble.py").write_text(ASSEMBLE)
    names = []
    for i, (pulse, direction, tamper, active) in enumerate(WIRINGS):
        name = f"w{i}"
        (tmp_path / f"{name}.S").write_text(ulp.source(pulse, direction, tamper, active))
        names.append(name)
    done = subprocess.run(
        [str(micropython_bin), "-X", "heapsize=4m", "assemble.py", *names], cwd=tmp_path,
        env={"MICROPYPATH": f"{tmp_path}:{UPY_LIB}"}, capture_output=True, text=True,
        timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    for name, (pulse, direction, tamper, active) in zip(names, WIRINGS, strict=True):
        theirs = (tmp_path / f"{name}.ulp").read_bytes()
        ours = ulp.image(pulse, direction, tamper, active)
        assert theirs[:4] == b"ulp\0"
        assert theirs == ours, name


def test_the_image_starts_the_counter_words_then_the_code() -> None:
    data = ulp.image(*WIRINGS[0])
    words, entry = ulp.assemble(*WIRINGS[0])
    assert entry == ulp.ENTRY
    assert int.from_bytes(data[4:6], "little") == 12
    assert int.from_bytes(data[6:8], "little") == 4 * len(words)
    assert data[12:16] == (1).to_bytes(4, "little")      # "state": the contact starts open
    assert len(data) == 12 + 4 * len(words)


@pytest.mark.parametrize("rtcio", [-1, 18])
def test_an_input_off_the_rtc_gpios_is_refused(rtcio: int) -> None:
    with pytest.raises(ValueError, match="RTC GPIO"):
        ulp.source(rtcio, 8, 6)


def test_the_esp32_hal_starts_the_ulp_at_the_entry() -> None:
    import re

    hal = (Path(ulp.__file__).resolve().parents[1] / "firmware" / "hal" / "esp32.py").read_text()
    found = re.search(r"^_ULP_ENTRY = (\d+)", hal, re.MULTILINE)
    assert found is not None and int(found.group(1)) == ulp.ENTRY
