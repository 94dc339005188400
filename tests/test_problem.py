"""BilevelProblem validation: x, contexts."""

import numpy as np
import pytest

from bilevel_envs.envs.four_rooms.problem import FourRoomsShaping


@pytest.fixture
def problem():
    return FourRoomsShaping(lam=0.003, beta=1.0)


def test_check_x_returns_float64_copy(problem):
    x = np.zeros(105, dtype=np.float32)
    out = problem.check_x(x)
    assert out.dtype == np.float64 and out is not x


@pytest.mark.parametrize("bad, pattern", [
    (np.zeros(104), r"x must have shape \(105,\).*got shape \(104,\)"),
    (np.zeros((105, 1)), r"shape \(105,\)"),
    (np.full(105, np.nan), r"x must be finite; NaN or inf"),
    (np.full(105, np.inf), r"NaN or inf"),
    (np.full(105, 31.0), r"x is outside x_space: x\[0\] = 31 is not in \[-30, 30\]"),
    (np.array(["a"] * 105), r"real array of shape \(105,\)"),
    ([[1, 2], [3]], r"real array of shape"),
])
def test_check_x_rejects_bad_input(problem, bad, pattern):
    with pytest.raises(ValueError, match=pattern):
        problem.check_x(bad)


def test_check_x_names_the_argument(problem):
    with pytest.raises(ValueError, match=r"^action must have shape"):
        problem.check_x(np.zeros(3), name="action")


def test_context_index_accepts_index_and_value(problem):
    assert problem.context_index(1) == 1
    assert problem.context_index(np.int64(0)) == 0
    assert problem.context_index((11, 11)) == 1
    assert problem.context_index([1, 9]) == 0


@pytest.mark.parametrize("bad", [2, -1, (0, 0), "G3", True, None])
def test_context_index_rejects_unknown(problem, bad):
    with pytest.raises(KeyError, match=r"unknown context .*expected an index in 0..1"):
        problem.context_index(bad)


@pytest.mark.parametrize("kwargs, pattern", [
    ({"lam": 0.0}, r"lam must be a finite number in \(0, inf\)"), ({"lam": float("nan")}, "lam"),
    ({"beta": -1.0}, "beta must be"),
    ({"move_prob": 1.5}, r"move_prob must be a finite number in \[0, 1\]"),
    ({"gamma": 1.0}, r"gamma must be a finite number in \[0, 1\)"),
])
def test_problem_rejects_bad_parameters(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        FourRoomsShaping(**kwargs)
