"""Shared fixtures and helpers for the test suite."""

from __future__ import annotations

import os
import warnings

# One BLAS thread: the suite's own parallelism (pytest -n) uses the cores.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

#: Gymnasium checker warnings we accept, each with the reason.
ALLOWED_CHECKER_WARNINGS = (
    # Leader actions are the leader's parameter x in natural units (tax rates in [0, 2],
    # softmax logits in [-30, 30]), not a normalised control signal.
    "For Box action spaces, we recommend using a symmetric and normalized space",
)


def check_env_strict(env, **kwargs) -> None:
    """Gymnasium's ``check_env`` with every warning outside the allow-list turned into a failure."""
    from gymnasium.utils.env_checker import check_env

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env, **kwargs)
    unexpected = [str(w.message) for w in caught
                  if not any(a in str(w.message) for a in ALLOWED_CHECKER_WARNINGS)]
    assert not unexpected, f"unexpected checker warnings: {unexpected}"


def z_score(estimate: float, truth: float, standard_error: float) -> float:
    """``|estimate − truth| / SE`` (the tests compare it with 4)."""
    return abs(estimate - truth) / standard_error


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)
