"""Every public constructor and solver checks its arguments: random bad values (strings, None,
lists, NaN, inf, out-of-range numbers, bools) give a ValueError naming the argument, never an
error from inside NumPy or Python."""

import math
import warnings

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bilevel_envs  # noqa: F401  (registers the ids)
from bilevel_envs.envs import households_v0
from bilevel_envs.envs.contract_design import ContractDesign
from bilevel_envs.envs.four_rooms import FourRoomsShaping
from bilevel_envs.envs.rlhf import RLHFProblem
from bilevel_envs.envs.tax_design import TaxDesign
from bilevel_envs.exact import ExactSolver, exact_objective
from bilevel_envs.followers.soft_q import SoftQLearning
from bilevel_envs.followers.soft_vi import SoftValueIteration
from bilevel_envs.leader_env import LeaderEnv
from bilevel_envs.tabular import soft_policy_iteration, soft_value_iteration
from leaders import AMD, HPGD, HPGDRTQ, RandomSearch, ZeroOrder

NOT_A_NUMBER = st.one_of(st.text(max_size=5), st.none(), st.lists(st.floats(), max_size=3),
                         st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
                         st.booleans(), st.sampled_from([math.nan, math.inf, -math.inf]),
                         # integers beyond the float range: float() overflows on them
                         st.sampled_from([10**400, -10**400]))


def numbers_outside(low=None, high=None, low_open=False, high_open=False):
    """Real numbers outside ``[low, high]`` (the open ends included when they are excluded)."""
    parts = []
    if low is not None:
        parts.append(st.floats(max_value=low, exclude_max=not low_open, allow_nan=False,
                               allow_infinity=False))
    if high is not None:
        parts.append(st.floats(min_value=high, exclude_min=not high_open, allow_nan=False,
                               allow_infinity=False))
    return st.one_of(*parts)


def bad_numbers(low=None, high=None, low_open=False, high_open=False):
    if low is None and high is None:
        return NOT_A_NUMBER
    return st.one_of(NOT_A_NUMBER, numbers_outside(low, high, low_open, high_open))


NOT_AN_INTEGER = st.one_of(st.text(max_size=4), st.none(), st.floats(), st.booleans(),
                           st.lists(st.integers(), max_size=2))


def bad_integers(minimum, maximum=None):
    # beyond int64 (check_int's cap: counts and seeds reach compiled code as int64)
    parts = [NOT_AN_INTEGER, st.integers(max_value=minimum - 1),
             st.sampled_from([2**62 + 1, 10**400])]
    if maximum is not None:
        parts.append(st.integers(min_value=maximum + 1, max_value=maximum + 10**6))
    return st.one_of(*parts)


def four_rooms_env(**kwargs):
    return gym.make("bilevel/FourRoomsShaping-v0", **{"n_envs": 1, "n_rollout_steps": 20,
                                                      **kwargs})


def not_none(strategy):
    """Bad values except None, which means "the default" for these arguments."""
    return strategy.filter(lambda v: v is not None)


def exact_env():
    return gym.make("bilevel/FourRoomsShaping-v0", objective="exact", n_rollout_steps=0)


_MODEL = FourRoomsShaping().tabular(np.zeros(105), 0)

#: (name, build(value), bad values): ``build`` passes ``value`` as the named argument.
CASES = [
    ("lam", lambda v: FourRoomsShaping(lam=v), bad_numbers(0, low_open=True)),
    ("beta", lambda v: FourRoomsShaping(beta=v), bad_numbers(0)),
    ("move_prob", lambda v: FourRoomsShaping(move_prob=v), bad_numbers(0, 1)),
    ("gamma", lambda v: FourRoomsShaping(gamma=v), bad_numbers(0, 1, high_open=True)),
    ("lam", lambda v: ContractDesign(lam=v), bad_numbers(0, low_open=True)),
    ("gamma", lambda v: ContractDesign(gamma=v), bad_numbers(0, 1, high_open=True)),
    ("x_max", lambda v: ContractDesign(x_max=v), bad_numbers(0, low_open=True)),
    ("revenue", lambda v: ContractDesign(revenue=v), bad_numbers(0)),
    ("cost_scales", lambda v: ContractDesign(cost_scales=v),
     st.one_of(st.text(min_size=1, max_size=3), st.just([]), st.just([1.0, -1.0]),
               st.just([math.nan]))),
    ("type_probs", lambda v: ContractDesign(cost_scales=(1.0, 2.0), type_probs=v),
     st.one_of(st.text(max_size=3), st.just([0.5]), st.just([0.7, 0.7]), st.just([1.5, -0.5]))),
    ("depth", lambda v: ContractDesign(instance="tree", depth=v), bad_integers(1, 8)),
    ("lam", lambda v: RLHFProblem("tiny", lam=v), bad_numbers(0, low_open=True)),
    ("gamma", lambda v: RLHFProblem("tiny", gamma=v), bad_numbers(0, 1, True, True)),
    ("beta", lambda v: RLHFProblem("tiny", beta=v), bad_numbers(0)),
    ("epsilon", lambda v: RLHFProblem("tiny", epsilon=v), bad_numbers(0, 0.5)),
    ("trajectory_length", lambda v: RLHFProblem("tiny", trajectory_length=v),
     not_none(bad_integers(1, 1000))),
    ("annotator_probs", lambda v: RLHFProblem("tiny", annotators="two", annotator_probs=v),
     st.one_of(st.text(max_size=3), st.just([1.0]), st.just([0.9, 0.9]))),
    ("theta", lambda v: TaxDesign(theta=v), not_none(bad_numbers(0))),
    ("noise_std", lambda v: TaxDesign(noise_std=v), not_none(bad_numbers(0, low_open=True))),
    ("gamma", lambda v: TaxDesign(gamma=v), not_none(bad_numbers(0, 1, high_open=True))),
    ("prices", lambda v: TaxDesign(prices=v), st.one_of(st.text(min_size=1, max_size=3),
                                                       st.just([1.0, -1.0, 1.0]))),
    ("episode_length", lambda v: TaxDesign(episode_length=v), not_none(bad_integers(1))),
    ("tol", lambda v: SoftValueIteration(tol=v), bad_numbers(0, low_open=True)),
    ("method", lambda v: SoftValueIteration(method=v), st.one_of(st.text(max_size=5),
                                                                 st.none(), st.integers())),
    ("n_steps", lambda v: SoftQLearning(n_steps=v), bad_integers(1)),
    ("epsilon", lambda v: SoftQLearning(epsilon=v), bad_numbers(0, 1)),
    ("learning_rate", lambda v: SoftQLearning(learning_rate=v), bad_numbers(0, 1, True)),
    ("tol", lambda v: ExactSolver(FourRoomsShaping(), tol=v), bad_numbers(0, low_open=True)),
    ("tol", lambda v: exact_objective(FourRoomsShaping(), np.zeros(105), tol=v),
     bad_numbers(0, low_open=True)),
    ("lam", lambda v: soft_policy_iteration(_MODEL, v), bad_numbers(0, low_open=True)),
    ("tol", lambda v: soft_value_iteration(_MODEL, 0.1, tol=v), bad_numbers(0, low_open=True)),
    ("max_iter", lambda v: soft_policy_iteration(_MODEL, 0.1, max_iter=v), bad_integers(0)),
    ("warm_start", lambda v: soft_policy_iteration(_MODEL, 0.1, warm_start=v),
     st.one_of(st.text(max_size=3), st.just(np.zeros((4, 104))), st.just(np.full((104, 4),
                                                                                 np.nan)))),
    ("n_envs", lambda v: four_rooms_env(n_envs=v), bad_integers(1)),
    ("n_rollout_steps", lambda v: gym.make("bilevel/FourRoomsShaping-v0", n_rollout_steps=v),
     st.one_of(NOT_AN_INTEGER, st.integers(max_value=-1), st.just(10**9))),
    ("objective", lambda v: four_rooms_env(objective=v), st.one_of(st.text(max_size=5),
                                                                   st.none())),
    ("oracle", lambda v: four_rooms_env(oracle=v), st.one_of(st.text(max_size=5), st.none())),
    ("follower_kwargs", lambda v: four_rooms_env(follower_kwargs=v),
     st.one_of(st.text(min_size=1, max_size=3), st.lists(st.integers(), min_size=1))),
    ("learning_rate", lambda v: HPGD(four_rooms_env(), learning_rate=v),
     bad_numbers(0, low_open=True)),
    ("max_grad_norm", lambda v: HPGD(four_rooms_env(), max_grad_norm=v),
     st.one_of(st.text(max_size=3), st.floats(max_value=0), st.just(math.nan))),
    ("optimizer", lambda v: HPGD(four_rooms_env(), optimizer=v),
     st.one_of(st.text(max_size=5), st.none())),
    ("seed", lambda v: HPGD(four_rooms_env(), seed=v),
     st.one_of(st.text(min_size=1, max_size=3), st.floats(), st.integers(max_value=-1))),
    ("log_interval", lambda v: HPGD(four_rooms_env(), log_interval=v), bad_integers(1)),
    ("verbose", lambda v: HPGD(four_rooms_env(), verbose=v), bad_integers(0, 1)),
    ("n_samples", lambda v: HPGD(four_rooms_env(), estimator="paper", n_samples=v),
     st.one_of(bad_integers(1), st.sampled_from([10**9, 10**400]))),
    ("n_samples", lambda v: HPGDRTQ(exact_env(), n_samples=v),
     st.one_of(bad_integers(1), st.sampled_from([10**8, 10**400]))),
    ("inner_iterations", lambda v: AMD(exact_env(), inner_iterations=v), bad_integers(1)),
    ("inner", lambda v: AMD(exact_env(), inner=v), st.one_of(st.text(max_size=5), st.none())),
    ("perturbation_constant", lambda v: ZeroOrder(exact_env(), perturbation_constant=v),
     bad_numbers(0, low_open=True)),
    ("levels", lambda v: HPGDRTQ(exact_env(), levels=v), bad_integers(2, 30)),
    ("perturbation", lambda v: RandomSearch(exact_env(), perturbation=v),
     bad_numbers(0, low_open=True)),
    ("n_directions", lambda v: RandomSearch(exact_env(), n_directions=v), bad_integers(1)),
]


@pytest.mark.parametrize("name, build, bad", CASES,
                         ids=[f"{i}-{c[0]}" for i, c in enumerate(CASES)])
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_bad_arguments_are_refused_by_name(name, build, bad, data):
    value = data.draw(bad, label=name)
    with pytest.raises((ValueError, KeyError)) as info:
        build(value)
    assert name in str(info.value), f"the error does not name {name!r}: {info.value}"


@pytest.mark.parametrize("name, build, bad", CASES,
                         ids=[f"{i}-{c[0]}" for i, c in enumerate(CASES)])
@pytest.mark.parametrize("huge", [10**400, -10**400, [10**400]], ids=["int", "-int", "list"])
def test_integers_beyond_float_and_int64_are_refused_by_name(name, build, bad, huge):
    """Python integers outside float64 and int64 overflow in ``float()``, NumPy and numba: they
    must be refused like any bad value (drawn always, not left to the random draws above)."""
    with pytest.raises((ValueError, KeyError)) as info:
        build(huge)
    assert name in str(info.value), f"the error does not name {name!r}: {info.value}"


def test_rtq_refuses_trajectory_level_objectives():
    with pytest.raises(ValueError, match="trajectory-level objective"):
        HPGDRTQ(gym.make("bilevel/RLHF-v0", instance="tiny"))


@pytest.mark.parametrize("env_id", sorted(i for i in gym.registry if i.startswith("bilevel/")))
def test_reset_options_that_an_env_does_not_read_are_named_in_a_warning(env_id):
    """Unknown ``reset`` options are tolerated (PettingZoo's API test passes arbitrary ones) but
    never ignored silently; options that are not a dict are refused by name."""
    env = gym.make(env_id)
    with pytest.warns(UserWarning, match=r"reset ignores the options \['staet'\]"):
        env.reset(seed=0, options={"staet": 1})
    with pytest.raises(ValueError, match="options must be a dict or None"):
        env.reset(seed=0, options=[("state", 1)])
    if not isinstance(env.unwrapped, LeaderEnv):  # follower envs read a start state
        first, _ = env.reset(seed=0)
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            again, _ = env.reset(seed=1, options={"state": first})
        np.testing.assert_array_equal(again, first)


def test_household_agents_accept_any_reset_options_but_check_their_type():
    """PettingZoo's convention (its API test passes ``{"options": 1}`` and fails on warnings)."""
    env = households_v0.parallel_env()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env.reset(seed=0, options={"options": 1})
    with pytest.raises(ValueError, match="options must be a dict or None"):
        env.reset(seed=0, options=[1])
