"""The committed vector files are what their independent generator builds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_frames_json_is_reproducible_from_the_independent_generator() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "vectors" / "make_vectors.py"), "--check"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, "tests/vectors/frames.json is stale: rerun make_vectors.py"
