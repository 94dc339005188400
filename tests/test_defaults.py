"""Registered defaults are practical: follower-level ids pose a task with something to learn at
their default x, and the leader envs' text view says what happened."""

import gymnasium as gym
import numpy as np
import pytest

import bilevel_envs  # noqa: F401
from bilevel_envs.envs.contract_design.envs import DEFAULT_REVENUE_SHARE
from bilevel_envs.tabular import evaluate_policy, soft_value_iteration


def learnable_gap(problem, x, context=0) -> float:
    """``μ·(V* − V^uniform)`` of the follower's unregularised return: what a learner gains over
    acting at random (0: nothing to learn)."""
    model = problem.tabular(np.asarray(x, dtype=np.float64), context)
    best = soft_value_iteration(model, 1e-3).pi  # near-greedy
    uniform = np.full_like(best, 1.0 / best.shape[-1])
    return float(model.mu @ (evaluate_policy(model, best) - evaluate_policy(model, uniform)))


def test_preference_grid_default_rewards_the_first_annotators_goal():
    env = gym.make("bilevel/PreferenceGrid-v0").unwrapped
    problem = env.problem
    np.testing.assert_allclose(problem.reward(env.x), problem.annotators[0].reward, atol=1e-12)
    assert learnable_gap(problem, env.x) > 0.5
    assert learnable_gap(problem, np.zeros(problem.n_params)) == pytest.approx(0.0, abs=1e-9)


def test_contract_agent_default_contract_makes_effort_pay():
    env = gym.make("bilevel/ContractAgent-v0").unwrapped
    problem = env.problem
    np.testing.assert_allclose(env.x, problem.revenue_share(DEFAULT_REVENUE_SHARE))
    assert env.x[0] == 1.0  # half the revenue 2 on work -> success

    def high_effort(x):
        return soft_value_iteration(problem.tabular(np.asarray(x), 0), 1e-3).pi[0, 1]

    assert high_effort(env.x) > 0.99  # paid: work hard
    assert high_effort(np.zeros_like(env.x)) < 0.01  # unpaid: shirk


def test_household_default_taxes_are_the_papers_initial_taxes():
    env = gym.make("bilevel/Household-v0").unwrapped
    np.testing.assert_array_equal(env.x, np.full(4, 0.3))


def test_leader_text_view_reports_the_step_and_a_budget_if_counted():
    env = gym.make("bilevel/TaxDesign-v0", tabular=True, asset_cells=11, n_envs=2,
                   n_rollout_steps=20, render_mode="ansi")
    env.reset(seed=0)
    assert "no step since reset" in env.render()
    env.step(np.array([0.3, 0.1, 0.2, 0.4]))
    text = env.render()
    assert "leader step 1 of the episode" in text
    assert "x: income tax 0.3; VAT per good 0.1, 0.2, 0.4" in text
    assert "J estimate:" in text and "(Monte-Carlo, 40 follower transitions)" in text
    # 40 rollout transitions, one exact solve per follower, no model query by a leader
    assert "budget used: transitions 40, follower_updates 1, model_queries 0" in text
    env.step(np.array([0.3, 0.1, 0.2, 0.4]))
    assert "budget used: transitions 80, follower_updates 2, model_queries 0" in env.render()
