"""Property tests' example counts follow the Hypothesis profile (tests/budget.py)."""

from __future__ import annotations

import pytest

from tests.budget import examples, profile_name


@pytest.mark.parametrize(("env", "profile", "count"), [
    ({}, "knute", 50), ({"CI": "true"}, "ci", 50),
    ({"CI": "true", "HYPOTHESIS_PROFILE": "nightly"}, "nightly", 900),
    ({"HYPOTHESIS_PROFILE": "nightly"}, "nightly", 900),
])
def test_the_count_is_the_profiles(monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
                                   profile: str, count: int) -> None:
    for name in ("CI", "HYPOTHESIS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert profile_name() == profile
    assert examples(ci=50, nightly=900) == count


def test_nightly_never_looks_less_far_than_ci() -> None:
    with pytest.raises(ValueError, match="nightly must look further"):
        examples(ci=100, nightly=10)
