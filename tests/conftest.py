"""Shared fixtures for the whole suite, and the Hypothesis profiles.

Hypothesis runs the ``dev`` profile by default and ``ci`` when ``CI`` is set to a true
value (as CI services do); ``HYPOTHESIS_PROFILE=dev|ci`` overrides both. Example counts
live in the profiles only: a test sets what its shape needs (``deadline=None`` for slow
examples, a stateful step count), never ``max_examples``.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"

# A suite started in the background by a non-interactive shell (as a CI runner may start
# it) inherits SIGINT ignored, and so would every process the tests start: a test that
# stops a child with Ctrl-C would wait forever. Catching SIGINT here gives the children
# the default disposition back (exec resets caught signals, not ignored ones).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# dev: quick enough to run on every change (tests/property in about 10 s).
settings.register_profile("dev", max_examples=100)
# ci: five times the examples (tests/property in about 50 s); no deadline and no
# too-slow check, because CI machines are shared and a slow example there says nothing
# about the code; failures print the blob that reproduces them.
settings.register_profile(
    "ci",
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)


def _profile() -> str:
    chosen = os.environ.get("HYPOTHESIS_PROFILE")
    if chosen:
        return chosen
    return "ci" if os.environ.get("CI", "").lower() in {"1", "true", "yes"} else "dev"


# Loaded here, before any test module builds its own settings objects on top of it.
settings.load_profile(_profile())


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES
