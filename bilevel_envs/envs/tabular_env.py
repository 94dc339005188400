"""A Gymnasium env for any finite :class:`~bilevel_envs.tabular.TabularModel` (the glue shared by
tabular problems whose rewards depend on ``(s, a)`` only)."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from bilevel_envs.env_base import BilevelEnvBase
from bilevel_envs.tabular import TabularModel
from bilevel_envs.validation import check_int, check_options


class TabularMDPEnv(BilevelEnvBase):
    """## Description
    Samples a finite MDP given as a :class:`TabularModel`: ``s_0 ~ μ``, ``s' ~ P(·|s, a)``.

    ## Action Space
    ``Discrete(A)``.

    ## Observation Space
    ``Discrete(S)``: the state index.

    ## Starting State
    ``s_0 ~ μ``, or ``options={"state": s}`` in ``reset``.

    ## Rewards
    Follower reward ``r(s, a)``; leader reward ``r̄(s, a)`` in ``info["leader_reward"]``.

    ## Episode End
    Terminates with probability ``1 − Σ_s' P(s'|s, a)`` after each step (the state then stays).

    ## Information
    ``"leader_reward"`` (float), ``"context"`` (as given).

    ## Arguments
    ``TabularMDPEnv(model, context=None, render_mode=None)``; wrap in ``TimeLimit`` for a time
    limit. ``render_mode="ansi"``: the state index.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(self, model: TabularModel, context: Any = None, render_mode: str | None = None):
        self.render_mode = self._check_render_mode(render_mode)
        if model.batch_shape:
            raise ValueError("TabularMDPEnv needs a single model, not a stack")
        self.model = model
        self.context = context
        self.observation_space = spaces.Discrete(model.n_states)
        self.action_space = spaces.Discrete(model.n_actions)
        self._cdf = np.cumsum(model.P, axis=-1)
        self._mu_cdf = np.cumsum(model.mu) / model.mu.sum()
        self.s = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        options = check_options(options, ("state",))
        super().reset(seed=seed)
        if "state" in options:
            self.s = check_int("options['state']", options["state"], 0, self.model.n_states - 1)
        else:
            self.s = min(int(np.searchsorted(self._mu_cdf, self.np_random.random(), "right")),
                         self.model.n_states - 1)
        return self.s, {"context": self.context}

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"action must be an integer in 0..{self.model.n_actions - 1}; "
                             f"got {action!r}")
        s, a = self.s, int(action)
        k = int(np.searchsorted(self._cdf[s, a], self.np_random.random(), side="right"))
        terminated = k >= self.model.n_states
        if not terminated:
            self.s = k
        info = {"leader_reward": float(self.model.r_leader[s, a]), "context": self.context}
        return self.s, float(self.model.r[s, a]), terminated, False, info

    def render(self):
        if self.render_mode == "ansi":
            return f"state {self.s}\n"
        self._warn_no_render_mode()
        return None
