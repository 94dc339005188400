"""A small random tabular problem in which x moves every part of the MDP (testing, teaching).

Unlike Four-Rooms, ``x`` enters the follower reward, the leader reward, the transitions *and* the
initial distribution, so every term of the hypergradient (paper Thm 2, Prop 1) is exercised.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.wrappers import TimeLimit

from bilevel_envs.envs.tabular_env import TabularMDPEnv
from bilevel_envs.problem import BilevelProblem, weighted_sum
from bilevel_envs.tabular import TabularModel


def _softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


class GarnetProblem(BilevelProblem):
    """A random smooth CB-RL problem ("Garnet"-style) with ``S`` states, ``A`` actions, ``d``
    parameters and a few contexts.

    * ``x ∈ [−2, 2]^d``.
    * ``P(s'|s,a) = κ softmax_s'(B[s,a,s'] + C[s,a,s']·x)`` with continuation ``κ = 1 − p_end``.
    * ``μ(s) = softmax_s(b[s] + D[s]·x)``.
    * ``r(s,a) = R0[s,a] + R1[s,a]·x``, ``r̄(s,a) = L0[s,a] + L1[s,a]·x`` (context-dependent R0, L0).

    Args:
        n_states, n_actions, n_params, n_contexts: sizes.
        lam: follower entropy weight; gamma, leader_gamma: discounts.
        p_end: termination probability per step.
        transition_scale, initial_scale: scale of ``C`` and ``D`` (how strongly x moves P and μ).
        seed: seed of the random tables.
    """

    is_tabular = True
    transitions_depend_on_x = True
    initial_depends_on_x = True

    def __init__(self, n_states: int = 6, n_actions: int = 3, n_params: int = 4,
                 n_contexts: int = 2, lam: float = 0.1, gamma: float = 0.9,
                 leader_gamma: float = 0.8, p_end: float = 0.05, transition_scale: float = 0.5,
                 initial_scale: float = 0.5, seed: int = 0):
        rng = np.random.default_rng(seed)
        S, A, d = n_states, n_actions, n_params
        self.lam, self.gamma, self.leader_gamma = float(lam), float(gamma), float(leader_gamma)
        self.p_end = float(p_end)
        self.x_space = spaces.Box(-2.0, 2.0, shape=(d,), dtype=np.float64)
        self.follower_action_space = spaces.Discrete(A)
        self.follower_observation_space = spaces.Discrete(S)
        self.max_episode_steps = None
        self.context_values = tuple(range(n_contexts))
        self.context_probs = rng.dirichlet(np.ones(n_contexts) * 3)
        self.B = rng.normal(size=(S, A, S)) * 1.5
        self.C = rng.normal(size=(S, A, S, d)) * transition_scale
        self.b = rng.normal(size=S)
        self.D = rng.normal(size=(S, d)) * initial_scale
        self.R0 = rng.normal(size=(n_contexts, S, A))
        self.R1 = rng.normal(size=(S, A, d)) * 0.3
        self.L0 = rng.normal(size=(n_contexts, S, A))
        self.L1 = rng.normal(size=(S, A, d)) * 0.3

    @property
    def x_init(self) -> np.ndarray:
        return np.zeros(self.n_params)

    # ------------------------------------------------------------------ model
    def _transition_probs(self, x: np.ndarray) -> np.ndarray:
        return (1.0 - self.p_end) * _softmax(self.B + self.C @ x)

    def tabular(self, x: np.ndarray, context: Any) -> TabularModel:
        x, ctx = self.check_x(x), self.context_index(context)
        P = self._transition_probs(x)
        # ∂P = P ⊙ (C − Σ_s' P̂ C) with P̂ the normalised softmax (κ is constant).
        mean_c = np.einsum("sap,sapd->sad", P / (1.0 - self.p_end), self.C)
        dP = P[..., None] * (self.C - mean_c[:, :, None, :])
        mu = _softmax(self.b + self.D @ x)
        dmu = mu[:, None] * (self.D - mu @ self.D)
        return TabularModel(P=P, r=self.R0[ctx] + self.R1 @ x, r_leader=self.L0[ctx] + self.L1 @ x,
                            mu=mu, gamma=self.gamma, leader_gamma=self.leader_gamma,
                            dr=self.R1, dr_leader=self.L1, dP=dP, dmu=dmu)

    def follower_env(self, x: np.ndarray, context: Any, **kwargs: Any) -> gym.Env:
        env = TabularMDPEnv(self.tabular(x, context), context=self.context_index(context))
        limit = kwargs.get("max_episode_steps", self.max_episode_steps)
        return TimeLimit(env, max_episode_steps=limit) if limit else env

    # ------------------------------------------------------------------ per-transition terms
    def follower_reward(self, x, context, obs, actions, next_obs):
        return self.R0[self.context_index(context)][obs, actions] + self.R1[obs, actions] @ x

    def leader_reward(self, x, context, obs, actions, next_obs):
        return self.L0[self.context_index(context)][obs, actions] + self.L1[obs, actions] @ x

    def grad_follower_reward(self, x, context, obs, actions, next_obs, weights=None):
        return weighted_sum(self.R1[obs, actions], weights)

    def grad_leader_reward(self, x, context, obs, actions, next_obs, weights=None):
        return weighted_sum(self.L1[obs, actions], weights)

    def grad_log_transition(self, x, context, obs, actions, next_obs, weights=None):
        # Valid for transitions that continue; estimators weight terminal ones by V = 0.
        p_hat = _softmax(self.B[obs, actions] + self.C[obs, actions] @ x)
        mean_c = np.einsum("np,npd->nd", p_hat, self.C[obs, actions])
        return weighted_sum(self.C[obs, actions, next_obs] - mean_c, weights)

    def grad_log_initial(self, x, context, obs, weights=None):
        mu = _softmax(self.b + self.D @ x)
        return weighted_sum(self.D[obs] - mu @ self.D, weights)
