"""Shared fixtures and helpers for the test suite."""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator

# One BLAS thread: the suite's own parallelism (pytest -n) uses the cores.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

#: The warnings of Gymnasium's, Stable-Baselines3's and PettingZoo's checkers (and of the calls
#: they make) that the conformance tests accept, each with the reason; every other warning fails.
ALLOWED_CHECKER_WARNINGS = (
    # Gymnasium check_env, leader ids: the action is the leader's parameter x in natural units
    # (tax rates in [0, 2], softmax logits in [-30, 30]), not a normalised control signal.
    "For Box action spaces, we recommend using a symmetric and normalized space",
    # SB3 check_env, leader ids: the same recommendation in SB3's words.
    "We recommend you to use a symmetric and normalized Box action space",
    # SB3 check_env, leader ids: x is float64 (exact hypergradients are compared to 1e-8); SB3's
    # float32 actions convert exactly, and every bound of x is exact in float32.
    "Your action space has dtype float64, we recommend using np.float32",
    # gym.make inside SB3's make_vec_env, ids that draw no picture: SB3 asks every env for
    # render_mode="rgb_array"; Gymnasium warns about the undeclared mode, the env refuses it with
    # the TypeError SB3 expects, and SB3 builds it without a render mode.
    "that is not in the possible render_modes",
    # PettingZoo api_test, households_v0: a household observes its assets, one number by design
    # (as in bilevel/Household-v0).
    "Observation is a single number",
    # PettingZoo api_test, households_v0 with asset_cells: the observation is a Discrete cell
    # index, a NumPy integer as Discrete.sample() returns it, not an array.
    "Observation is not a NumPy array",
)


@contextlib.contextmanager
def strict_warnings(allowed: tuple[str, ...] = ALLOWED_CHECKER_WARNINGS) -> Iterator[None]:
    """Fail on any warning raised inside the block unless its message contains an entry of
    ``allowed``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    unexpected = [f"{w.category.__name__}: {w.message}" for w in caught
                  if not any(a in str(w.message) for a in allowed)]
    assert not unexpected, f"unexpected warnings: {unexpected}"


def check_env_strict(env, **kwargs) -> None:
    """Gymnasium's ``check_env`` with every warning outside the allow-list turned into a failure."""
    from gymnasium.utils.env_checker import check_env

    with strict_warnings():
        check_env(env, **kwargs)


def z_score(estimate: float, truth: float, standard_error: float) -> float:
    """``|estimate − truth| / SE`` (the tests compare it with 4)."""
    return abs(estimate - truth) / standard_error


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)
