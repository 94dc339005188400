"""The exact follower-quality measures: soft-optimality gap, visited TV, warning, LeaderEnv info."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from bilevel_envs import LeaderEnv
from bilevel_envs.envs.garnet import GarnetProblem
from bilevel_envs.follower_quality import (
    FollowerQuality,
    FollowerQualityWarning,
    QualityMonitor,
    follower_quality,
    gap_by_state,
    soft_optimality_gap,
    visit_counts,
    visited_total_variation,
    warn_if_far,
)
from bilevel_envs.policies import TabularPolicy
from bilevel_envs.tabular import TabularModel, solve_follower

GAMMA, LAM = 0.5, 1.0
E = np.e


def two_state_model(mu=(1.0, 0.0)) -> TabularModel:
    """Action ``a`` moves to state ``a`` (deterministic); reward 1 for action 0, 0 for action 1.

    By symmetry ``V*`` is the same in both states: ``V* = γ V* + λ log(e^{1/λ} + 1)``, so
    with γ = ½, λ = 1: ``V* = 2 log(1 + e)`` and ``π*(0|s) = e/(1 + e)``.
    """
    P = np.zeros((2, 2, 2))
    P[:, 0, 0] = P[:, 1, 1] = 1.0
    r = np.array([[1.0, 0.0], [1.0, 0.0]])
    zeros = np.zeros((2, 2, 1))
    return TabularModel(P=P, r=r, r_leader=np.zeros((2, 2)), mu=np.asarray(mu), gamma=GAMMA,
                        leader_gamma=GAMMA, dr=zeros, dr_leader=zeros)


V_STAR = 2 * np.log(1 + E)
P0_STAR = E / (1 + E)


def test_gap_is_zero_for_the_exact_soft_optimal_policy():
    problem, x = GarnetProblem(), np.full(4, 0.3)
    for context in range(problem.n_contexts):
        model = problem.tabular(x, context)
        pi = solve_follower(model, problem.lam).pi
        assert abs(soft_optimality_gap(model, problem.lam, pi)) <= 1e-10
        assert visited_total_variation(model, problem.lam, pi) <= 1e-10
    model = two_state_model()
    star = solve_follower(model, LAM)
    np.testing.assert_allclose(star.pi[:, 0], P0_STAR, atol=1e-12)
    quality, _ = follower_quality(model, LAM, TabularPolicy(star.pi))
    assert quality.v_star == pytest.approx(V_STAR, abs=1e-10)
    assert abs(quality.gap) <= 1e-10 and quality.tv <= 1e-10


def test_gap_matches_the_hand_computation_for_suboptimal_policies():
    model = two_state_model()
    # Uniform: reward ½ and entropy log 2 every step, V = (½ + log 2)/(1 − γ) = 1 + 2 log 2.
    uniform = np.full((2, 2), 0.5)
    v_uniform = 1 + 2 * np.log(2)
    quality, _ = follower_quality(model, LAM, uniform)
    assert quality.v_pi == pytest.approx(v_uniform, abs=1e-12)
    assert quality.gap == pytest.approx((V_STAR - v_uniform) / V_STAR, abs=1e-12)
    # Always action 0: reward 1, no entropy, V = 1/(1 − γ) = 2.
    greedy = np.array([[1.0, 0.0], [1.0, 0.0]])
    assert soft_optimality_gap(model, LAM, greedy) == pytest.approx((V_STAR - 2) / V_STAR,
                                                                    abs=1e-12)
    # A negative control: the hand values differ, so the gap is not a constant.
    assert (V_STAR - 2) / V_STAR != pytest.approx((V_STAR - v_uniform) / V_STAR, abs=1e-3)


def test_gap_by_state_sums_to_the_value_gap_and_matches_the_hand_split():
    """The per-state split of ``V* − V^π``: on the two-state model with ``π(0|0) = 1``,
    ``π(0|1) = ½`` from ``s_0 = 0`` the follower never leaves state 0, so all of the loss is
    there: ``d(0) λ KL(δ_0 ‖ π*) = −log π*(0)/(1 − γ)``; on Garnet contexts the entries sum to
    the gap's numerator for random policies and vanish for the exact one."""
    model = two_state_model()
    pi = np.array([[1.0, 0.0], [0.5, 0.5]])
    split = gap_by_state(model, LAM, pi)
    np.testing.assert_allclose(split, [-LAM * np.log(P0_STAR) / (1 - GAMMA), 0.0], atol=1e-10)
    quality, _ = follower_quality(model, LAM, pi)
    assert split.sum() == pytest.approx(quality.v_star - quality.v_pi, abs=1e-10)
    problem, x, rng = GarnetProblem(), np.full(4, 0.3), np.random.default_rng(0)
    for context in range(problem.n_contexts):
        model = problem.tabular(x, context)
        star = solve_follower(model, problem.lam)
        assert np.abs(gap_by_state(model, problem.lam, star.pi, solution=star)).max() <= 1e-9
        logits = rng.normal(size=star.pi.shape)
        pi = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
        split = gap_by_state(model, problem.lam, pi)
        quality, _ = follower_quality(model, problem.lam, pi)
        assert (split >= -1e-12).all()
        assert split.sum() == pytest.approx(quality.v_star - quality.v_pi, rel=1e-8)


def test_visited_tv_matches_the_hand_value():
    model = two_state_model()
    # π(0|0) = 1, π(0|1) = ½: TV = 1 − π*(0) in state 0 and |½ − π*(0)| in state 1.
    pi = np.array([[1.0, 0.0], [0.5, 0.5]])
    tv0, tv1 = 1 - P0_STAR, abs(0.5 - P0_STAR)
    assert visited_total_variation(model, LAM, pi, [3, 1]) == pytest.approx(
        (3 * tv0 + tv1) / 4, abs=1e-12)
    assert visited_total_variation(model, LAM, pi, [0.0, 1.0]) == pytest.approx(tv1, abs=1e-12)
    # Without visits: the discounted occupancy from s_0 = 0 under a policy that stays in 0.
    assert visited_total_variation(model, LAM, pi) == pytest.approx(tv0, abs=1e-12)
    np.testing.assert_array_equal(visit_counts([0, 1, 1, 1], 2), [1.0, 3.0])


def test_bad_input_is_refused_with_the_argument_named():
    model = two_state_model()
    with pytest.raises(ValueError, match="policy"):
        soft_optimality_gap(model, LAM, np.ones((3, 2)) / 2)
    with pytest.raises(ValueError, match="sum to 1"):
        soft_optimality_gap(model, LAM, np.full((2, 2), 0.4))
    with pytest.raises(ValueError, match="visits"):
        visited_total_variation(model, LAM, np.full((2, 2), 0.5), [1, -1])
    with pytest.raises(ValueError, match="positive sum"):
        visited_total_variation(model, LAM, np.full((2, 2), 0.5), [0, 0])
    with pytest.raises(ValueError, match="lam"):
        soft_optimality_gap(model, 0.0, np.full((2, 2), 0.5))


def test_the_warning_fires_for_a_uniform_policy_and_not_for_the_exact_one():
    model = two_state_model()
    star = solve_follower(model, LAM).pi
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not warn_if_far(follower_quality(model, LAM, star)[0])
    with pytest.warns(FollowerQualityWarning, match="soft-optimality gap"):
        assert warn_if_far(follower_quality(model, LAM, np.full((2, 2), 0.5))[0], 0.05)
    assert issubclass(FollowerQualityWarning, UserWarning)
    # The threshold is respected: a gap of 0.063 passes a 0.1 threshold.
    assert not warn_if_far(FollowerQuality(0.063, 0.2, 1.0, 0.937), 0.1)


def test_monitor_warns_once_per_context_per_episode():
    problem = GarnetProblem()
    env = LeaderEnv(problem, follower="soft_q", follower_kwargs={"n_steps": 5, "n_chains": 1},
                    contexts="all", n_envs=1, n_rollout_steps=20, quality_threshold=0.0)
    env.reset(seed=0)
    with pytest.warns(FollowerQualityWarning) as record:
        env.step(np.zeros(4))
    assert len(record) == problem.n_contexts
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env.step(np.zeros(4))  # the same episode: no second warning
    env.reset(seed=1)
    with pytest.warns(FollowerQualityWarning):
        env.step(np.zeros(4))


def test_leader_env_reports_quality_of_a_soft_q_follower():
    problem = GarnetProblem()
    env = LeaderEnv(problem, follower="soft_q", follower_kwargs={"n_steps": 2000, "n_chains": 4},
                    contexts="all", n_envs=2, n_rollout_steps=50, quality_threshold=1.0)
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.zeros(4))
    step = env.last_step
    for i, stats in enumerate(info["follower_stats"]):
        f = step.followers[i]
        visits = visit_counts(f.rollouts.obs[f.rollouts.mask], f.model.n_states)
        expected, _ = follower_quality(f.model, problem.lam, f.response.policy, visits)
        assert stats["soft_optimality_gap"] == pytest.approx(expected.gap, abs=1e-9)
        assert stats["visited_tv"] == pytest.approx(expected.tv, abs=1e-9)
        assert 0 < stats["soft_optimality_gap"] < 1 and 0 < stats["visited_tv"] < 1
        assert stats["soft_value_optimal"] >= stats["soft_value_follower"]
        assert step.quality[i].as_stats() == {k: stats[k] for k in expected.as_stats()}


def test_exact_follower_reports_zero_gap_and_off_switch():
    problem = GarnetProblem()
    env = LeaderEnv(problem, follower="soft_vi", contexts="all", n_envs=1, n_rollout_steps=20,
                    follower_quality=True)
    env.reset(seed=0)
    info = env.step(np.zeros(4))[4]
    assert all(abs(s["soft_optimality_gap"]) <= 1e-10 for s in info["follower_stats"])
    # By default an exact follower is not measured (its gap is the solver's tolerance).
    assert LeaderEnv(problem, follower="soft_vi").quality_monitor is None
    assert LeaderEnv(problem, follower="soft_q").quality_monitor is not None
    off = LeaderEnv(problem, follower="soft_q", n_envs=1, n_rollout_steps=20,
                    follower_quality=False)
    off.reset(seed=0)
    assert "soft_optimality_gap" not in off.step(np.zeros(4))[4]["follower_stats"][0]
    assert off.last_step.quality is None
    with pytest.raises(ValueError, match="follower_quality must be True or False"):
        LeaderEnv(problem, follower_quality="yes")
    with pytest.raises(ValueError, match="quality_threshold"):
        LeaderEnv(problem, quality_threshold=-1.0)


def test_a_problem_without_a_model_cannot_be_measured():
    class NoModel(GarnetProblem):
        is_tabular = False

    with pytest.raises(ValueError, match="no exact model or tabular twin"):
        QualityMonitor(NoModel())


def test_continuous_tax_households_are_measured_on_the_grid_twin():
    """The grid follower plays π* of its own grid: exact on the 41-cell twin (gap 0, queried at
    the cell centres), measurably off with a coarser 21-cell grid."""
    import gymnasium as gym

    import bilevel_envs  # noqa: F401  (registers the ids)

    gaps = {}
    for cells in (41, 21):
        env = gym.make("bilevel/TaxDesign-v0", follower="grid_soft_vi",
                       follower_kwargs={"asset_cells": cells}, n_envs=2, n_rollout_steps=10,
                       follower_quality=True, quality_threshold=1.0).unwrapped
        assert env.quality_monitor.twin is env.problem.discretised()
        env.reset(seed=0)
        stats = env.step(env.problem.x_init)[4]["follower_stats"][0]
        gaps[cells] = stats["soft_optimality_gap"], stats["visited_tv"]
    assert abs(gaps[41][0]) <= 1e-10 and gaps[41][1] <= 1e-10
    assert gaps[21][0] > 1e-3 and gaps[21][1] > 1e-3
    # Continuous problems are not measured unless asked to (the twin costs a model per step).
    assert gym.make("bilevel/TaxDesign-v0", follower="grid_soft_vi").unwrapped.quality_monitor \
        is None
