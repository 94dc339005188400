"""`LeaderEnv`: the bilevel problem seen from the leader, as a Gymnasium env whose action is x."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from bilevel_envs.followers import FollowerResponse, make_follower
from bilevel_envs.oracles import make_oracle
from bilevel_envs.plain_data import to_plain_data
from bilevel_envs.problem import BilevelProblem, PairwiseObjective, TrajectoryPairs
from bilevel_envs.rollouts import Rollouts
from bilevel_envs.step_record import FollowerStep, LeaderStep
from bilevel_envs.tabular import TabularModel, leader_values
from bilevel_envs.validation import check_int

CONTEXT_MODES = ("sample", "all")
OBJECTIVES = ("monte_carlo", "exact")


class LeaderEnv(gym.Env):
    """A leader's view of a :class:`~bilevel_envs.BilevelProblem`.

    Each ``step(x)`` validates ``x``, lets every follower respond to ``M_{x,ξ}`` (warm-started
    from its previous response in the same context within the episode), samples rollouts of the
    followers' policies and returns an estimate of the leader objective ``J(x)`` as the reward.

    * Action space: ``problem.x_space`` (natural units; out-of-bounds ``x`` raises ``ValueError``).
    * Observation: the last ``x`` applied (zeros after ``reset``); the box is ``x_space``
      widened to contain 0.
    * Reward: ``objective="monte_carlo"``: the context-weighted
      :meth:`~bilevel_envs.BilevelProblem.estimate_objective` of each follower's rollouts — by
      default the mean discounted leader return of the episodes in the rollouts (consistent,
      ``O(1/n_episodes)`` bias from keeping only finished episodes); ``"exact"`` (tabular problems
      with a decomposable objective): the exact value of the followers' policies,
      ``Σ_ξ w_ξ μ·V̄^{π_ξ}``.
    * Episode: ``horizon`` steps, then truncation; never terminates.
    * Info: ``"rollouts"`` (dict of ``(n_envs·n_followers, T)`` arrays, see
      :class:`~bilevel_envs.rollouts.Rollouts`), ``"contexts"`` (context index per follower),
      ``"context_weights"``, ``"objective_estimate"`` (Monte-Carlo), ``"objective_exact"``
      (with ``objective="exact"``), ``"follower_stats"`` (one dict per follower).
      Live objects (responses, policies, oracles, rollouts, models) are on the env's typed record
      of the step, :attr:`last_step` (a :class:`~bilevel_envs.step_record.LeaderStep`).

    Args:
        problem: the bilevel problem.
        follower: a follower name (``"soft_vi"``, ...) or a
            :class:`~bilevel_envs.followers.Follower`.
        follower_kwargs: keyword arguments of the named follower (plain data).
        contexts: ``"sample"`` — ``n_followers`` contexts drawn from ``P_ξ`` at every step (weights
            ``1/n_followers``); ``"all"`` — one follower per context of the support, weighted by
            ``P_ξ``; or an explicit list of contexts (uniform weights).
        n_followers: followers per step in ``"sample"`` mode.
        n_envs: parallel rollout chains per follower.
        n_rollout_steps: steps per chain (episodes auto-reset); 0 disables rollouts (needs
            ``objective="exact"``).
        horizon: leader steps per episode.
        objective: ``"monte_carlo"`` or ``"exact"`` (see Reward).
        oracle: ``"auto"``, ``"native"``, ``"tabular"`` or ``"gym"``: how rollouts are sampled
            (see :func:`~bilevel_envs.rollouts.make_oracle`).
    """

    metadata = {"render_modes": []}

    def __init__(self, problem: BilevelProblem, follower: Any = "soft_vi",
                 follower_kwargs: dict[str, Any] | None = None,
                 contexts: str | Sequence[Any] = "sample", n_followers: int = 1, n_envs: int = 5,
                 n_rollout_steps: int = 2000, horizon: int = 1000,
                 objective: str = "monte_carlo", oracle: str = "auto"):
        if not isinstance(problem, BilevelProblem):
            raise TypeError(f"problem must be a BilevelProblem; got {type(problem).__name__}")
        self.problem = problem
        self.follower = make_follower(follower, **(follower_kwargs or {}))
        if not self.follower.supports(problem):
            raise ValueError(f"follower {follower!r} cannot solve {problem!r}")
        self.context_mode, self.fixed_contexts = self._parse_contexts(contexts)
        for name, value, minimum in (("n_followers", n_followers, 1), ("n_envs", n_envs, 1),
                                     ("n_rollout_steps", n_rollout_steps, 0),
                                     ("horizon", horizon, 1)):
            check_int(name, value, minimum)
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}; got {objective!r}")
        if objective == "exact" and not (problem.is_tabular and problem.decomposable):
            raise ValueError("objective='exact' needs a tabular problem with a decomposable "
                             "objective (a discounted sum of leader rewards)")
        if n_rollout_steps == 0 and objective != "exact":
            raise ValueError("n_rollout_steps=0 leaves nothing to estimate J from; use "
                             "objective='exact' or n_rollout_steps >= 1")
        self.n_followers, self.n_envs = int(n_followers), int(n_envs)
        self.n_rollout_steps, self.horizon = int(n_rollout_steps), int(horizon)
        self.objective, self.oracle_backend = objective, oracle
        # A trajectory-level objective of labelled pairs: the reward is estimated from the pairs.
        self._pairwise = not problem.decomposable and isinstance(problem, PairwiseObjective)

        self.action_space = problem.x_space
        low = np.minimum(problem.x_space.low, 0.0)
        high = np.maximum(problem.x_space.high, 0.0)
        self.observation_space = spaces.Box(low, high, dtype=np.float64)

        #: the typed record of the last step (followers, responses, oracles, rollouts, models)
        self.last_step: LeaderStep | None = None
        self._warm: dict[int, Any] = {}
        self._t = 0
        self._crn_state: dict | None = None

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._t = 0
        self._warm = {}
        self.last_step = None
        return np.zeros(self.observation_space.shape), {}

    def step(self, action):
        x = self.problem.check_x(action, name="action")
        if self._crn_state is not None:
            self.np_random.bit_generator.state = copy.deepcopy(self._crn_state)
        contexts, weights = self._step_contexts()
        # Every follower responds before any samples: the random stream's order is part of the
        # env's reproducibility.
        responses = [self._respond(x, c) for c in contexts]
        models = [self._model(x, c, r) for c, r in zip(contexts, responses)]
        oracles = [make_oracle(self.problem, x, c, r.policy, backend=self.oracle_backend, model=m)
                   for c, r, m in zip(contexts, responses, models)]
        parts: list[Rollouts | None] = [None] * len(contexts)
        pairs: list[TrajectoryPairs | None] = [None] * len(contexts)
        estimates = np.full(len(contexts), np.nan)
        if self.n_rollout_steps:
            parts = [o.rollout(self.np_random, self.n_envs, self.n_rollout_steps)
                     for o in oracles]
            for i, (c, rollouts) in enumerate(zip(contexts, parts)):
                if self._pairwise:
                    pairs[i] = self.problem.trajectory_pairs(rollouts)
                    estimates[i] = self.problem.pair_objective(x, c, pairs[i].traj0,
                                                               pairs[i].traj1).mean()
                else:
                    estimates[i] = self.problem.estimate_objective(x, c, rollouts,
                                                                   self.np_random)
        followers = tuple(
            FollowerStep(context=c, weight=float(w), response=r, oracle=o, rollouts=part,
                         model=m, pairs=pair, objective_estimate=float(e))
            for c, w, r, o, part, m, pair, e in zip(contexts, weights, responses, oracles, parts,
                                                     models, pairs, estimates))
        exact = None
        if self.objective == "exact":
            exact = float(weights @ self._exact_values(followers))
        estimate = float(weights @ estimates) if self.n_rollout_steps else exact
        reward = exact if exact is not None else estimate
        self.last_step = LeaderStep(x=x, followers=followers, objective_estimate=estimate,
                                    objective_exact=exact, reward=reward)
        self._t += 1
        return x, reward, False, self._t >= self.horizon, self._info(self.last_step)

    def _info(self, step: LeaderStep) -> dict[str, Any]:
        """The step's plain-data ``info`` (the live objects stay on :attr:`last_step`)."""
        info: dict[str, Any] = {
            "contexts": step.contexts, "context_weights": step.weights.tolist(),
            "follower_stats": [dict(f.response.stats) for f in step.followers],
            "objective_estimate": step.objective_estimate,
        }
        if step.objective_exact is not None:
            info["objective_exact"] = step.objective_exact
        parts = [f.rollouts for f in step.followers if f.rollouts is not None]
        info["rollouts"] = Rollouts.concatenate(parts).to_dict(copy=False) if parts else {}
        return info

    # ------------------------------------------------------------------ checkpoints
    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The env's resumable state as ``(json_data, arrays)`` — no pickling.

        Covers the random generator, the step counter and the followers' warm starts when they
        are arrays (soft VI / soft Q tables). Other warm starts (e.g. SB3 models) are dropped:
        after :meth:`set_state` those followers restart cold.
        """
        data: dict[str, Any] = {"t": self._t,
                                "rng": to_plain_data(self.np_random.bit_generator.state),
                                "warm_contexts": []}
        arrays: dict[str, np.ndarray] = {}
        for context, warm in self._warm.items():
            if isinstance(warm, np.ndarray):
                data["warm_contexts"].append(int(context))
                arrays[f"warm_{int(context)}"] = warm
        return data, arrays

    def set_state(self, data: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Restore a state from :meth:`get_state`."""
        if self._np_random is None:
            self.reset()
        self.np_random.bit_generator.state = data["rng"]
        self._t = int(data["t"])
        self._warm = {c: np.array(arrays[f"warm_{c}"]) for c in data["warm_contexts"]}

    # ------------------------------------------------------------------ helpers
    @contextlib.contextmanager
    def common_random_numbers(self) -> Iterator[None]:
        """Within the block, every ``step`` starts from the same random state: the same contexts
        and the same rollout uniforms (common random numbers for finite differences)."""
        if self._np_random is None:
            raise RuntimeError("call reset() before using common_random_numbers()")
        self._crn_state = copy.deepcopy(self.np_random.bit_generator.state)
        try:
            yield
        finally:
            self._crn_state = None

    def exact_values(self, step: LeaderStep | None = None) -> np.ndarray:
        """Exact leader value ``μ·V̄`` of each follower's policy in ``step`` (default: the last
        step), on the step's exact models (tabular problems with a decomposable objective)."""
        step = self.last_step if step is None else step
        if step is None:
            raise RuntimeError("no step has been taken yet")
        return self._exact_values(step.followers)

    def _exact_values(self, followers: Sequence[FollowerStep]) -> np.ndarray:
        if not (self.problem.is_tabular and self.problem.decomposable):
            raise ValueError("exact leader values need a tabular problem with a decomposable "
                             "objective")
        values = []
        for f in followers:
            table = f.response.policy.action_probs(np.arange(f.model.n_states))
            values.append(float(leader_values(f.model, table, self.problem.lam,
                                              with_gradient=False).objective))
        return np.array(values)

    def _model(self, x: np.ndarray, context: int, response: FollowerResponse
               ) -> TabularModel | None:
        """The exact model of ``M_{x,ξ}`` for this step: the follower's, or built once here."""
        if response.model is not None:
            return response.model
        return self.problem.tabular(x, context) if self.problem.is_tabular else None

    def _respond(self, x: np.ndarray, context: int) -> FollowerResponse:
        seed = int(self.np_random.integers(0, 2**31 - 1))
        response = self.follower.respond(self.problem, x, context, seed=seed,
                                         warm_start=self._warm.get(context))
        self._warm[context] = response.warm_start
        return response

    def _step_contexts(self) -> tuple[list[int], np.ndarray]:
        if self.context_mode == "sample":
            contexts = [self.problem.sample_context(self.np_random)
                        for _ in range(self.n_followers)]
            return contexts, np.full(len(contexts), 1.0 / len(contexts))
        if self.context_mode == "all":
            return list(range(self.problem.n_contexts)), np.asarray(self.problem.context_probs)
        contexts = list(self.fixed_contexts)
        return contexts, np.full(len(contexts), 1.0 / len(contexts))

    def _parse_contexts(self, contexts) -> tuple[str, list[int]]:
        if isinstance(contexts, str):
            if contexts not in CONTEXT_MODES:
                raise ValueError(f"contexts must be one of {CONTEXT_MODES} or a list of contexts;"
                                 f" got {contexts!r}")
            return contexts, []
        indices = [self.problem.context_index(c) for c in contexts]
        if not indices:
            raise ValueError("contexts must not be empty")
        return "fixed", indices

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.problem!r}, follower={self.follower!r}, "
                f"contexts={self.context_mode!r})")
