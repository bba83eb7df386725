"""The simulated clock: an epoch fixed in the configuration or given by a clock file.

With a clock file the clock stands still until the file appears, then runs
from the epoch it gives; a bad file leaves it held and is logged once.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from knute.gateway import config
from knute.gateway.errors import KnuteError
from knute.gateway.simclock import ClockFileError, SimulatedClock, read_clock_file

SPEED = 7200.0


def test_a_fixed_epoch_meets_the_wall_clock_at_clock_start() -> None:
    clock = SimulatedClock(SPEED, epoch=(1000.0, 1000.0))
    assert clock.at(1000.0) == 1000.0 and clock.at(1001.0) == 1000.0 + SPEED


def test_held_until_the_clock_file_gives_the_epoch(tmp_path: Path) -> None:
    path = tmp_path / "clock.json"
    clock = SimulatedClock(SPEED, clock_file=str(path), held_at=5_000.0)
    assert clock.epoch() is None
    assert clock.at(1e9) == clock.at(2e9) == 5_000.0
    path.write_text(json.dumps({"simulated": 5_000.0, "wall": 1e9}))
    clock._checked = float("-inf")          # the next call reads the file (no waiting)
    assert clock.epoch() == (5_000.0, 1e9)
    assert clock.at(1e9) == 5_000.0 and clock.at(1e9 + 0.5) == 5_000.0 + SPEED / 2
    path.unlink()                           # read once: it stays on that epoch
    assert clock.at(1e9 + 1) == 5_000.0 + SPEED


def test_a_bad_clock_file_keeps_it_held_and_is_logged_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "clock.json"
    path.write_text('{"simulated": 5000, "wall": "soon"}')
    clock = SimulatedClock(SPEED, clock_file=str(path), held_at=5_000.0)
    with caplog.at_level(logging.ERROR, logger="knute.gateway.simclock"):
        for _ in range(3):
            clock._checked = float("-inf")
            assert clock.at(1e9) == 5_000.0
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [f"{path}: 'wall' must be unix seconds, not 'soon'; "
                      "the simulated clock stays held"]
    path.write_text('{"simulated": 5000, "wall": 1e9}')
    clock._checked = float("-inf")
    assert clock.at(1e9 + 1) == 5_000.0 + SPEED


@pytest.mark.parametrize(("text", "words"), [
    ("[1, 2]", "must be an object"),
    ("{", "is not JSON"),
    ('{"simulated": 1}', "'wall' must be unix seconds, not None"),
    ('{"simulated": true, "wall": 1}', "'simulated' must be unix seconds, not True"),
])
def test_read_clock_file_errors_name_the_file(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "clock.json"
    path.write_text(text)
    with pytest.raises(ClockFileError) as info:
        read_clock_file(str(path))
    assert str(info.value).startswith(f"{path}: ") and words in str(info.value)
    assert read_clock_file(str(tmp_path / "none.json")) is None


def test_clock_file_needs_a_simulations_speed(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    base = (f'[gateway]\nid = "g"\ndata_dir = "{tmp_path}"\nclock_file = "clock.json"\n'
            '[mqtt]\nhost = "127.0.0.1"\n[[serial]]\nname = "radio"\nurl = "/dev/null"\n')
    path.write_text(base)
    with pytest.raises(KnuteError, match=r"gateway\.clock_file: needs clock_speed above 1"):
        config.load(str(path))
    path.write_text(base.replace("[mqtt]", "clock_speed = 60\n[mqtt]"))
    assert config.load(str(path)).clock_file == str(tmp_path / "clock.json")
