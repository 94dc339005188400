"""``bilevel_envs.testing.check_problem`` on every registered problem, and on deliberately broken
problems it must catch, each failure naming the broken term.

The broken problems: a sign-flipped ``grad_leader_reward``; ``grad_log_transition`` scaled by
0.95 and by 0.999 (a 0.1 % error: the finite-difference checks have power far below the 5 % of
the estimator tests); a follower env whose slip probability is 10 % off (the default sample
size) and 2 % off (300,000 transitions, slow); a follower env that moves where the model
forbids; one that starts from the wrong distribution; a problem whose ``dP`` is nonzero while
``transitions_depend_on_x`` is False (the estimators would skip its score term).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.wrappers import TimeLimit

import bilevel_envs
from bilevel_envs.envs.contract_design.problem import ContractDesign
from bilevel_envs.envs.four_rooms.envs import FourRoomsEnv
from bilevel_envs.envs.four_rooms.problem import FourRoomsShaping
from bilevel_envs.envs.garnet import GarnetProblem
from bilevel_envs.envs.tabular_env import TabularMDPEnv
from bilevel_envs.oracles import TabularOracle
from bilevel_envs.testing import ProblemCheckError, check_problem, z_scores
from leaders.testing import hpgd_estimator

LEADER_IDS = sorted(i for i, (_, kw) in bilevel_envs.ENV_IDS.items()
                    if kw["max_episode_steps"] == bilevel_envs.LEADER_EPISODE_STEPS)
#: the problems of every registered leader id: the registered default and the variants of its
#: problem class (tabular tax design, the contract instances, the exactly solvable RLHF one)
VARIANTS: dict[str, dict[str, dict]] = {
    "bilevel/FourRoomsShaping-v0": {"default": {}},
    "bilevel/TaxDesign-v0": {"default": {}, "tabular": {"tabular": True, "asset_cells": 11}},
    "bilevel/ContractDesign-v0": {"default": {}, "tree": {"instance": "tree"},
                                  "grid": {"instance": "grid"}},
    "bilevel/RLHF-v0": {"default": {}, "tiny": {"instance": "tiny"}},
}
#: check_problem's arguments per variant: the defaults, except tabular tax design, whose
#: follower env steps in ~0.3 ms (20× Four-Rooms'): 6,000 transitions keep its check at seconds
CHECK_KWARGS = {("bilevel/TaxDesign-v0", "tabular"): {"n_transitions": 6_000}}
CASES = [(env_id, name) for env_id in LEADER_IDS for name in VARIANTS[env_id]]


def registered_problem(env_id: str, variant: str):
    return gym.make(env_id, **VARIANTS[env_id][variant]).unwrapped.problem


def test_the_table_covers_every_registered_leader_id():
    assert set(VARIANTS) == set(LEADER_IDS)


@pytest.mark.parametrize("env_id, variant", CASES, ids=[f"{i}-{v}" for i, v in CASES])
def test_every_registered_problem_passes(env_id, variant):
    """Every check that applies passes with HPGD's estimator (raises otherwise); the exact
    checks run wherever an exact layer exists."""
    problem = registered_problem(env_id, variant)
    report = check_problem(problem, estimator=hpgd_estimator,
                           **CHECK_KWARGS.get((env_id, variant), {}))
    ran = {r.name for r in report.results if not r.skipped}
    assert {"follower env check_env", "sampler rewards", "grad_follower_reward",
            "grad_leader_reward"} <= ran
    if problem.is_tabular:
        assert {"sampler transitions", "sampler initial states", "TabularModel.dr"} <= ran
    exact = not (env_id == "bilevel/RLHF-v0" and variant == "default") and problem.is_tabular
    assert ({"exact_hypergradient", "hypergradient estimator"} <= ran) == exact


def test_what_does_not_apply_is_skipped_with_its_reason():
    """Tax design with continuous assets: no model, so no chi-square and no exact checks; the
    reward gradients are still compared with finite differences at sampled transitions."""
    report = check_problem(registered_problem("bilevel/TaxDesign-v0", "default"))
    assert report["sampler transitions"].message == ("the problem is not tabular: no model to "
                                                     "compare with")
    assert report["exact_hypergradient"].skipped and report["hypergradient estimator"].skipped
    assert report["grad_leader_reward"].passed and report["sampler rewards"].passed
    assert "no exact hypergradient: enumerating trajectories" in check_problem(
        registered_problem("bilevel/RLHF-v0", "default"))["exact_hypergradient"].message


def test_garnet_exercises_every_score_term_and_the_leader_env_check():
    """x moves P and μ: both score terms are compared; the LeaderEnv check runs on request."""
    report = check_problem(GarnetProblem(), estimator=hpgd_estimator, leader_env=True)
    assert not any(r.skipped for r in report.results)
    assert report["grad_log_initial"].statistic < 1e-6
    assert report["hypergradient estimator"].passed and report["LeaderEnv check_env"].passed


def test_same_seed_same_report():
    a, b = (check_problem(GarnetProblem(), seed=3, estimator=hpgd_estimator) for _ in range(2))
    assert [r.statistic for r in a.results] == [r.statistic for r in b.results]
    assert [r.message for r in a.results] == [r.message for r in b.results]


# ---------------------------------------------------------------------------- broken problems
class FlippedLeaderGradient(FourRoomsShaping):
    """∂x r̄ with the wrong sign (the model's dr_leader is right)."""

    def grad_leader_reward(self, *args, **kwargs):
        return -super().grad_leader_reward(*args, **kwargs)


class FlippedContractGradient(ContractDesign):
    def grad_leader_reward(self, *args, **kwargs):
        return -super().grad_leader_reward(*args, **kwargs)


def failures(problem, **kwargs) -> dict[str, str]:
    """The failed checks of ``problem`` (HPGD's estimator unless ``estimator`` is given)."""
    with pytest.raises(ProblemCheckError) as caught:
        check_problem(problem, **{"estimator": hpgd_estimator, **kwargs})
    report = caught.value.report
    assert str(caught.value).startswith(f"{len(report.failures)} check(s) of {problem!r} failed")
    return {r.name: r.message for r in report.failures}


def test_a_sign_flipped_leader_reward_gradient_is_caught_and_named():
    failed = failures(FlippedLeaderGradient(), estimator=None)  # Four-Rooms: the FD check
    assert list(failed) == ["grad_leader_reward"]
    assert failed["grad_leader_reward"].startswith(
        "grad_leader_reward disagrees with finite differences of leader_reward: max rel. "
        "error 2 at context 0, transition (s=7, a=0, s'=7)")
    # where the leader's reward gradient carries the hypergradient, HPGD's estimate shows it too
    failed = failures(FlippedContractGradient())
    assert set(failed) == {"grad_leader_reward", "hypergradient estimator"}
    assert "disagrees with the exact hypergradient" in failed["hypergradient estimator"]


@pytest.mark.parametrize("scale", [0.95, 0.999])
def test_a_wrong_transition_score_is_caught_and_named(scale):
    class ScaledScore(GarnetProblem):
        def grad_log_transition(self, *args, **kwargs):
            return scale * super().grad_log_transition(*args, **kwargs)

    failed = failures(ScaledScore())
    assert list(failed) == ["grad_log_transition"]
    assert failed["grad_log_transition"].startswith(
        f"grad_log_transition disagrees with finite differences of log P(s'|s, a) of the model: "
        f"max rel. error {1 - scale:.3g} at context ")


def test_a_wrong_weighted_contraction_is_caught_and_named():
    class WrongContraction(GarnetProblem):
        def grad_follower_reward(self, x, context, obs, actions, next_obs, weights=None):
            grads = super().grad_follower_reward(x, context, obs, actions, next_obs)
            return grads if weights is None else 1.01 * (weights @ grads)

    failed = failures(WrongContraction())
    assert "grad_follower_reward(weights=w) is not Σ_n w_n grad_follower_reward" in failed[
        "grad_follower_reward"]


def test_a_score_flag_that_hides_dP_from_the_estimators_is_caught():
    class NoFlag(GarnetProblem):
        transitions_depend_on_x = False

    failed = failures(NoFlag())
    assert failed["TabularModel.dP"].startswith(
        "TabularModel.dP is nonzero at context 0 but problem.transitions_depend_on_x is False")


class SlipSampler(FourRoomsShaping):
    """A follower env whose slip probability is ``slip_scale`` times the model's."""

    def __init__(self, slip_scale: float, **kwargs):
        super().__init__(**kwargs)
        self.slip_scale = slip_scale

    def follower_env(self, x, context, **kwargs):
        move_prob = 1 - self.slip_scale * (1 - self.move_prob)
        env = FourRoomsEnv(x=x, context=context, move_prob=move_prob, beta=self.beta)
        return TimeLimit(env, self.max_episode_steps)


def test_a_sampler_with_a_ten_percent_slip_error_is_caught_at_the_default_size():
    """20,000 transitions: p = 5e-19 (Bonferroni threshold 8e-5); without the error the same
    samples pass."""
    failed = failures(SlipSampler(1.1), n_directions=1)
    assert list(failed) == ["sampler transitions"]
    assert failed["sampler transitions"].startswith(
        "the sampler's transitions disagree with the model's P (smallest p = ")
    assert check_problem(SlipSampler(1.0), n_directions=1)["sampler transitions"].passed


@pytest.mark.slow
@pytest.mark.parametrize("slip_scale", [0.98, 1.02])
def test_a_sampler_with_a_two_percent_slip_error_is_caught_with_300_000_transitions(slip_scale):
    """p = 2e-9 (−2 %) and 1e-9 (+2 %) against the threshold 8e-5 (~10 s each)."""
    failed = failures(SlipSampler(slip_scale), n_transitions=300_000, n_directions=1)
    assert list(failed) == ["sampler transitions"]


def test_a_sampler_that_moves_where_the_model_forbids_is_caught_with_the_transition():
    class NoSlipModel(FourRoomsShaping):
        """The model never slips (move_prob = 1), the env does (move_prob = 2/3)."""

        def follower_env(self, x, context, **kwargs):
            env = FourRoomsEnv(x=x, context=context, move_prob=2 / 3, beta=self.beta)
            return TimeLimit(env, self.max_episode_steps)

    failed = failures(NoSlipModel(move_prob=1.0), n_directions=1)
    assert "sampler transitions" in failed
    assert "which the model's P gives probability 0" in failed["sampler transitions"]


def test_a_follower_env_with_the_wrong_initial_distribution_is_caught():
    class UniformStart(GarnetProblem):
        def follower_env(self, x, context, **kwargs):
            model = self.tabular(x, context)
            uniform = np.full(model.n_states, 1.0 / model.n_states)
            return TabularMDPEnv(model.with_updates(mu=uniform), context=context)

    failed = failures(UniformStart())
    assert list(failed) == ["sampler initial states"]
    assert failed["sampler initial states"].startswith(
        "the follower env's initial states disagree with the model's μ")


class NativeOracle(GarnetProblem):
    """A problem with its own sampler (a tabular oracle of the model at ``x + shift``)."""

    def __init__(self, shift: float):
        super().__init__()
        self.shift = shift

    def make_oracle(self, x, context, policy, **kwargs):
        model = self.tabular(x, context)
        model = model.with_updates(P=self._transition_probs(x + self.shift))
        return TabularOracle(self, x, context, policy, model=model, **kwargs)


def test_a_native_oracle_is_checked_against_the_model_too():
    passed = check_problem(NativeOracle(0.0))["sampler transitions"]
    assert passed.passed and "= α / 8 tests" in passed.message  # 2 samplers × 2 contexts × 2
    failed = failures(NativeOracle(0.3))
    assert failed["sampler transitions"].startswith(
        "the sampler's transitions disagree with the model's P")
    assert ": the native oracle at context " in failed["sampler transitions"]


def test_a_follower_env_without_the_leader_reward_is_named():
    class DropInfo(gym.Wrapper):
        def step(self, action):
            *out, _ = self.env.step(action)
            return (*out, {})

    class NoLeaderReward(GarnetProblem):
        def follower_env(self, x, context, **kwargs):
            return DropInfo(super().follower_env(x, context, **kwargs))

    problem = NoLeaderReward()
    failed = failures(problem)
    assert failed["sampler rewards"] == ("sampler rewards raised KeyError: \"the follower env's "
                                         "step info has no 'leader_reward' (the leader's reward "
                                         "of the transition)\"")


# ---------------------------------------------------------------------------- arguments, helpers
@pytest.mark.parametrize("kwargs, message", [
    ({"n_transitions": 0}, "n_transitions must be an integer >= 100; got 0"),
    ({"alpha": 1.5}, r"alpha must be a finite number in \(0, 1\); got 1.5"),
    ({"seed": -1}, "seed must be an integer >= 0; got -1"),
    ({"leader_env": "yes"}, "leader_env must be"),
    ({"x": np.full(4, 5.0)}, r"x is outside x_space: x\[0\] = 5 is not in \[-2, 2\]"),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        check_problem(GarnetProblem(), **kwargs)


def test_wrong_types_are_refused():
    with pytest.raises(TypeError, match="problem must be a BilevelProblem; got str"):
        check_problem("bilevel/FourRooms-v0")
    with pytest.raises(TypeError, match="estimator must be a callable"):
        check_problem(GarnetProblem(), estimator=5)


def test_z_scores_leave_coordinates_without_variance_to_the_direction():
    samples = np.column_stack([np.zeros(50), np.random.default_rng(0).normal(1.0, 0.1, 50)])
    z = z_scores(samples, np.array([1e-5, 1.0]))
    assert z[0] == 0.0 and abs(z[1]) < 4 and np.isfinite(z[2])
    assert z_scores(np.ones((10, 2)), np.array([1.0, 2.0]))[-1] == -np.inf
