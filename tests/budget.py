"""How many examples a property test runs: a count for every run, a larger one nightly.

``make test`` and CI run each property with the count written at the test as
``examples(ci=N, nightly=M)``: derandomized under CI, so the same N examples
every time; N is what that property's input space needs (its reason is written
beside it). ``HYPOTHESIS_PROFILE=nightly`` runs the M examples, randomized, to
look further than CI does; a failure there prints the blob that replays it.
Properties without a count run the profile's own (100 in CI, 1,000 nightly).
"""

from __future__ import annotations

import os

PROFILE_ENV = "HYPOTHESIS_PROFILE"
NIGHTLY = "nightly"
NIGHTLY_DEFAULT_EXAMPLES = 1000


def profile_name() -> str:
    """The Hypothesis profile of this run: ``$HYPOTHESIS_PROFILE``, else "ci" under ``$CI``."""
    return os.environ.get(PROFILE_ENV) or ("ci" if os.environ.get("CI") else "knute")


def examples(ci: int, nightly: int) -> int:
    """The example count of a property test: ``nightly`` in the nightly profile, else ``ci``."""
    if ci > nightly:
        raise ValueError(f"examples(ci={ci}, nightly={nightly}): nightly must look further")
    return nightly if profile_name() == NIGHTLY else ci
