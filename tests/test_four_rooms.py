"""Four-Rooms: layout, the Gymnasium env against the tabular model, env checkers."""

import gymnasium as gym
import numpy as np
import pytest

import bilevel_envs  # noqa: F401  (registers the ids)
from bilevel_envs.envs.four_rooms.envs import FourRoomsEnv
from bilevel_envs.envs.four_rooms.model import (
    CELLS,
    GOAL_STATES,
    N_CELLS,
    N_PARAMS,
    START_STATE,
    TARGET_STATE,
    softmax,
)
from bilevel_envs.envs.four_rooms.problem import FourRoomsShaping
from bilevel_envs.testing import chi_square_p, pooled_mode_chi_square_p
from tests.conftest import check_env_strict


def test_layout_matches_reference_state_order():
    assert N_CELLS == 104 and N_PARAMS == 105
    assert (START_STATE, GOAL_STATES, TARGET_STATE) == (31, (7, 103), 66)
    assert CELLS[51] == (6, 2) and CELLS[62] == (7, 9)  # the two vertical doorways
    assert CELLS[25] == (3, 6) and CELLS[88] == (10, 6)


def _next_state_counts(env, state, action, n, rng_seed):
    counts = np.zeros(N_CELLS, dtype=np.int64)
    env.reset(seed=rng_seed)
    for _ in range(n):
        env.reset(options={"state": state})
        next_state, *_ = env.step(action)
        counts[next_state] += 1
    return counts


# Wall corners, doorways, a room interior, the other context's goal and the target.
SAMPLED_PAIRS = [(0, 0), (0, 3), (31, 1), (51, 2), (62, 0), (25, 1), (88, 3), (40, 2),
                 (103, 1), (66, 0)]


@pytest.mark.parametrize("move_prob", [2 / 3, 0.56])
def test_env_transitions_match_tabular_model(move_prob):
    """≥ 10⁵ sampled transitions of the Gymnasium env match P (chi-square, p > 0.001)."""
    env = FourRoomsEnv(x=np.zeros(105), context=0, move_prob=move_prob)
    model = FourRoomsShaping(move_prob=move_prob).tabular(np.zeros(105), 0)
    for i, (s, a) in enumerate(SAMPLED_PAIRS):
        counts = _next_state_counts(env, s, a, 10_000, rng_seed=i)
        assert chi_square_p(counts, model.P[s, a]) > 0.001, (s, a)


def test_chi_square_check_detects_a_wrong_slip_model():
    """Power check: sampling with 2/3 and testing against the 0.56 model must fail."""
    env = FourRoomsEnv(x=np.zeros(105), context=0, move_prob=2 / 3)
    wrong = FourRoomsShaping(move_prob=0.56).tabular(np.zeros(105), 0)
    counts = _next_state_counts(env, 40, 2, 10_000, rng_seed=0)
    assert chi_square_p(counts, wrong.P[40, 2]) < 0.001


#: interior cells, one per room, every action: each move's intended cell is free
INTERIOR_PAIRS = [(s, a) for s in (22, 38, 75, 80) for a in range(4)]


def test_env_slip_probability_matches_the_model_to_two_percent():
    """240,000 env steps from interior cells (every action, one cell per room): the pooled
    count of intended moves matches the model (slip chi-square, 1 df: p = 0.30), and the same
    counts reject the models whose slip probability 1/3 is off by −2 % or +2 % (p < 0.001;
    reached: z = 8.0 and 5.9, p = 1e-15 and 5e-9)."""
    env = FourRoomsEnv(x=np.zeros(105), context=0)
    counts = [_next_state_counts(env, s, a, 15_000, rng_seed=100 + i)
              for i, (s, a) in enumerate(INTERIOR_PAIRS)]

    def p_value(slip_scale):
        model = FourRoomsShaping(move_prob=1 - slip_scale / 3).tabular(np.zeros(105), 0)
        return pooled_mode_chi_square_p(counts, [model.P[s, a] for s, a in INTERIOR_PAIRS])

    assert p_value(1.0) > 0.001
    assert p_value(0.98) < 0.001 and p_value(1.02) < 0.001


def test_goal_step_terminates_with_reward_one_and_stays():
    x = np.random.default_rng(0).normal(size=105)
    env = FourRoomsEnv(x=x, context=1, beta=2.0)
    env.reset(seed=0, options={"state": 103})
    s, r, terminated, truncated, info = env.step(0)
    sigma = softmax(x)
    assert (s, r, terminated, truncated) == (103, 1.0, True, False)
    assert info["leader_reward"] == pytest.approx(-2.0 * 0.2 * (1 - sigma[-1]))


@pytest.mark.parametrize("context", [0, 1])
def test_env_rewards_equal_model_rewards(context):
    x = np.random.default_rng(context).normal(size=105)
    problem = FourRoomsShaping(beta=3.0)
    model = problem.tabular(x, context)
    env = FourRoomsEnv(x=x, context=context, beta=3.0)
    env.reset(seed=0)
    for s in range(N_CELLS):
        env.reset(options={"state": s})
        _, r, _, _, info = env.step(1)
        assert r == pytest.approx(model.r[s, 1])
        assert info["leader_reward"] == pytest.approx(model.r_leader[s, 1])


def test_per_transition_terms_match_model():
    problem = FourRoomsShaping(beta=2.0)
    x = np.random.default_rng(5).normal(size=105)
    obs = np.arange(N_CELLS).repeat(4)
    actions = np.tile(np.arange(4), N_CELLS)
    for c in (0, 1):
        model = problem.tabular(x, c)
        args = (x, c, obs, actions, obs)
        assert np.allclose(problem.follower_reward(*args), model.r[obs, actions])
        assert np.allclose(problem.leader_reward(*args), model.r_leader[obs, actions])
        g = problem.grad_follower_reward(*args)
        gl = problem.grad_leader_reward(*args)
        assert np.allclose(g, model.dr[obs, actions])
        assert np.allclose(gl, model.dr_leader[obs, actions])
        w = np.random.default_rng(c).normal(size=obs.size)
        assert np.allclose(problem.grad_follower_reward(*args, weights=w), w @ g)
        assert np.allclose(problem.grad_leader_reward(*args, weights=w), w @ gl)


def test_reset_state_option_is_validated():
    env = FourRoomsEnv()
    with pytest.raises(ValueError, match=r"options\['state'\] must be an integer in 0..103"):
        env.reset(options={"state": 104})


def test_env_rejects_bad_x_and_context():
    with pytest.raises(ValueError, match="x must have shape"):
        FourRoomsEnv(x=np.zeros(3))
    with pytest.raises(KeyError, match="unknown context"):
        FourRoomsEnv(context=5)


def test_registered_follower_env_has_time_limit():
    env = gym.make("bilevel/FourRooms-v0", x=np.zeros(105), context=0)
    assert env.spec.max_episode_steps == 200


def test_render_modes():
    env = FourRoomsEnv(render_mode="ansi")
    env.reset(seed=0)
    text = env.render()
    assert text.count("A") == 1 and "G" in text and "+" in text
    img = FourRoomsEnv(render_mode="rgb_array").render()
    assert img.shape == (13 * 16, 13 * 16, 3) and img.dtype == np.uint8


def test_sb3_env_checker_passes():
    pytest.importorskip("stable_baselines3")
    from stable_baselines3.common.env_checker import check_env

    check_env(gym.make("bilevel/FourRooms-v0", x=np.zeros(105), context=1).unwrapped,
              warn=True)


def test_gymnasium_checker_passes_without_warnings():
    check_env_strict(gym.make("bilevel/FourRooms-v0").unwrapped)
