"""Four-Rooms reward shaping as a :class:`~bilevel_envs.BilevelProblem` (paper §5.1)."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from bilevel_envs.envs.four_rooms.model import (
    DEFAULT_MOVE_PROB,
    GOAL_STATES,
    GOALS,
    MAX_EPISODE_STEPS,
    N_ACTIONS,
    N_CELLS,
    N_PARAMS,
    PENALTY_SCALE,
    START_STATE,
    X_BOUND,
    follower_state_reward,
    leader_state_reward,
    penalty_jacobian,
    softmax,
    total_penalty_grad,
    transition_tensor,
)
from bilevel_envs.problem import BilevelProblem
from bilevel_envs.tabular import TabularModel
from bilevel_envs.validation import check_float


class FourRoomsShaping(BilevelProblem):
    """The Four-Rooms reward-shaping problem (paper §5.1) as a :class:`BilevelProblem`.

    * ``x ∈ [−30, 30]^105``: softmax logits, one per free cell (state order) plus an unused-budget
      slot; penalties ``r̃ = −0.2 softmax(x)[:104]`` (total budget 0.2).
    * Contexts: the two goals ``(1, 9)`` and ``(11, 11)``, uniform.
    * Follower reward ``r(s) = 1{s = G_ξ} + r̃(s) 1{s ≠ G_ξ}``, collected on the pre-step state; the
      step taken from the goal ends the episode.
    * Leader reward ``r̄(s) = 1{s = (8,4)} − β 1{s = G_ξ} Σ_c |r̃(c)|``.

    Args:
        lam: follower entropy weight λ.
        beta: leader's weight β on the total penalty it implements.
        move_prob: probability that the chosen move happens; the other three directions share
            the rest (default 2/3; the paper's Table 3 numbers were produced with 0.56).
        gamma: discount of both levels (0.99).
    """

    is_tabular = True
    follower_env_id = "bilevel/FourRooms-v0"

    def __init__(self, lam: float = 0.001, beta: float = 1.0,
                 move_prob: float = DEFAULT_MOVE_PROB, gamma: float = 0.99):
        self.lam = check_float("lam", lam, 0.0, low_open=True)
        self.beta = check_float("beta", beta, 0.0)
        self.move_prob = check_float("move_prob", move_prob, 0.0, 1.0)
        self.gamma = self.leader_gamma = check_float("gamma", gamma, 0.0, 1.0, high_open=True)
        self.x_space = spaces.Box(-X_BOUND, X_BOUND, shape=(N_PARAMS,), dtype=np.float64)
        self.follower_action_space = spaces.Discrete(N_ACTIONS)
        self.follower_observation_space = spaces.Discrete(N_CELLS)
        self.max_episode_steps = MAX_EPISODE_STEPS
        self.context_values = GOALS
        self.context_probs = np.full(len(GOALS), 1.0 / len(GOALS))
        self._mu = np.zeros(N_CELLS)
        self._mu[START_STATE] = 1.0
        # x-independent tables derived from P (sampling, sparse successors), one set per goal
        self._caches: dict[int, dict] = {i: {} for i in range(len(GOALS))}

    @property
    def x_init(self) -> np.ndarray:
        return np.zeros(N_PARAMS)

    def sample_x_init(self, rng: np.random.Generator) -> np.ndarray:
        """``N(0, 0.01²)`` logits, as in the authors' code (an almost uniform penalty)."""
        return rng.normal(0.0, 0.01, size=N_PARAMS)

    def context_name(self, context: Any) -> str:
        i = self.context_index(context)
        return f"G{i + 1} {GOALS[i]}"

    # ------------------------------------------------------------------ models and envs
    def tabular(self, x: np.ndarray, context: Any) -> TabularModel:
        ctx = self.context_index(context)
        x = self.check_x(x)
        goal = GOAL_STATES[ctx]
        sigma = softmax(x)
        dr_state = penalty_jacobian(sigma)
        dr_state[goal] = 0.0
        dr_leader_state = np.zeros((N_CELLS, N_PARAMS))
        dr_leader_state[goal] = -self.beta * total_penalty_grad(sigma)
        return TabularModel(
            P=transition_tensor(self.move_prob, goal),
            r=_per_action(follower_state_reward(sigma, goal)),
            r_leader=_per_action(leader_state_reward(sigma, goal, self.beta)),
            mu=self._mu, gamma=self.gamma, leader_gamma=self.leader_gamma,
            dr=_per_action_derivative(dr_state),
            dr_leader=_per_action_derivative(dr_leader_state),
            cache=self._caches[ctx],
        )

    # ------------------------------------------------------------------ per-transition terms
    def follower_reward(self, x, context, obs, actions, next_obs) -> np.ndarray:
        goal = GOAL_STATES[self.context_index(context)]
        return follower_state_reward(softmax(x), goal)[np.asarray(obs)]

    def leader_reward(self, x, context, obs, actions, next_obs) -> np.ndarray:
        goal = GOAL_STATES[self.context_index(context)]
        return leader_state_reward(softmax(x), goal, self.beta)[np.asarray(obs)]

    def grad_follower_reward(self, x, context, obs, actions, next_obs, weights=None):
        goal = GOAL_STATES[self.context_index(context)]
        sigma = softmax(x)
        obs = np.asarray(obs)
        if weights is None:
            jac = penalty_jacobian(sigma)
            jac[goal] = 0.0
            return jac[obs]
        # Σ_n w_n ∂r̃(s_n) = −0.2 (c ⊙ σ − (c·σ) σ) with c the weight per cell (goal excluded).
        c = np.bincount(obs, weights=weights, minlength=N_CELLS)
        c[goal] = 0.0
        out = -PENALTY_SCALE * (c @ sigma[:N_CELLS]) * sigma
        out[:N_CELLS] += PENALTY_SCALE * c * sigma[:N_CELLS]
        return -out

    def grad_leader_reward(self, x, context, obs, actions, next_obs, weights=None):
        goal = GOAL_STATES[self.context_index(context)]
        obs = np.asarray(obs)
        g = -self.beta * total_penalty_grad(softmax(x))
        if weights is None:
            return np.where((obs == goal)[:, None], g[None, :], 0.0)
        return float(np.sum(np.asarray(weights)[obs == goal])) * g

    def __repr__(self) -> str:
        return (f"FourRoomsShaping(lam={self.lam}, beta={self.beta}, "
                f"move_prob={self.move_prob:.4g})")


def _per_action(state_reward: np.ndarray) -> np.ndarray:
    """``(S, A)`` read-only table of a reward that depends on the state only (contiguous: the
    solvers take it as it is)."""
    table = np.repeat(state_reward[:, None], N_ACTIONS, axis=1)
    table.setflags(write=False)
    return table


def _per_action_derivative(state_derivative: np.ndarray) -> np.ndarray:
    """``(S, A, d)`` read-only view of a per-state derivative ``(S, d)`` repeated over actions:
    ``np.broadcast_to``'s view, built directly (a model is built on every leader step)."""
    rows, cols = state_derivative.strides
    view = np.ndarray((N_CELLS, N_ACTIONS, N_PARAMS), dtype=np.float64, buffer=state_derivative,
                      strides=(rows, 0, cols))
    view.setflags(write=False)
    return view
