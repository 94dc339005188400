"""The oracles that sample follower trajectories (paper Assumption 3.2) as :class:`Rollouts`.

An oracle samples trajectories of one follower policy in ``M_{x,ξ}``:

* :class:`TabularOracle` — the fast path for finite problems: all chains are stepped by a numba
  kernel from sparse cumulative-probability tables.
* :class:`GymOracle` — the generic path: steps the problem's Gymnasium follower envs.
* a problem's own oracle (:meth:`~bilevel_envs.problem.BilevelProblem.make_oracle`), e.g. the
  vectorised household simulator of tax design; :func:`make_oracle` prefers it.

All can start from ``μ`` or from given ``(state, action)`` pairs (paper Alg. 2 restarts), run
chains of individual lengths, and auto-reset episodes into a continuous stream.
"""

from __future__ import annotations

import abc
import functools
from typing import Any

import numpy as np
from gymnasium.wrappers import TimeLimit

from bilevel_envs.policies import Policy, normalised_cdf, sample_rows
from bilevel_envs.problem import BilevelProblem
from bilevel_envs.rollouts import Rollouts
from bilevel_envs.tabular import TabularModel, policy_entropy, sparse_transitions
from bilevel_envs.validation import check_allocation, check_indices, check_int


# ---------------------------------------------------------------------------- oracles
class TrajectoryOracle(abc.ABC):
    """Samples trajectories of a fixed follower ``policy`` in ``M_{x,ξ}``.

    Args:
        problem: the bilevel problem.
        x: the leader's parameter.
        context: a context of ``problem``.
        policy: the follower's policy (``action_probs(obs) -> (n, A)``).
        max_episode_steps: the time limit of episodes; the problem's (the Gymnasium env's) by
            default. Pass ``time_limit=False`` to :meth:`rollout` for the infinite-horizon MDP.
    """

    def __init__(self, problem: BilevelProblem, x: np.ndarray, context: Any, policy: Policy,
                 max_episode_steps: int | None = None):
        self.problem = problem
        self.x = problem.check_x(x)
        self.context = problem.context_index(context)
        self.policy = policy
        self.max_episode_steps = (problem.max_episode_steps if max_episode_steps is None
                                  else max_episode_steps)

    @abc.abstractmethod
    def rollout(self, rng: np.random.Generator, n_envs: int, n_steps: int, *,
                start_states=None, start_actions=None, lengths=None, auto_reset: bool = True,
                time_limit: bool = True) -> Rollouts:
        """Sample ``n_envs`` chains of ``n_steps`` steps.

        Args:
            rng: the source of all randomness.
            n_envs: number of parallel chains.
            n_steps: steps per chain (the time axis ``T``).
            start_states: ``(n_envs,)`` first states (``-1``: draw from μ); default all from μ.
            start_actions: ``(n_envs,)`` first actions (``-1``: draw from π); default from π.
            lengths: ``(n_envs,)`` individual chain lengths ``≤ n_steps``; default ``n_steps``.
            auto_reset: start a new episode from μ after each episode end (else stop the chain).
            time_limit: apply :attr:`max_episode_steps` (truncation).
        """

    def check_rollout_arguments(self, n_envs: int, n_steps: int, start_states, start_actions,
                                lengths, n_states: int | None
                                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Validate :meth:`rollout`'s arguments (for implementations of it): returns the start
        states, first actions (``-1``: draw) and chain lengths as ``(n_envs,)`` int64 arrays.

        Raises:
            ValueError: naming the argument, for sizes or indices out of range.
        """
        n_envs, n_steps = check_int("n_envs", n_envs, 1), check_int("n_steps", n_steps, 0)
        check_allocation("n_envs × n_steps", n_envs * n_steps)
        n_actions = self.problem.follower_action_space.n

        def per_env(values, n, name, default):
            if values is None:
                return np.full(n_envs, default, dtype=np.int64)
            arr = np.asarray(values)
            if arr.shape != (n_envs,):
                raise ValueError(f"{name} must have shape ({n_envs},); got {arr.shape}")
            valid = arr[arr >= 0] if arr.dtype.kind in "iu" else arr
            if n is not None:
                check_indices(valid, n, name)
            return arr.astype(np.int64)

        starts = per_env(start_states, n_states, "start_states", -1)
        first_actions = per_env(start_actions, n_actions, "start_actions", -1)
        lens = per_env(lengths, n_steps + 1, "lengths", n_steps)
        return starts, first_actions, lens


class TabularOracle(TrajectoryOracle):
    """The fast path: numba stepping of a finite model under a tabular policy."""

    def __init__(self, problem: BilevelProblem, x: np.ndarray, context: Any, policy: Policy,
                 max_episode_steps: int | None = None, model: TabularModel | None = None):
        super().__init__(problem, x, context, policy, max_episode_steps)
        model = problem.tabular(self.x, self.context) if model is None else model
        self.n_states = model.n_states
        self.next_states, self.next_cdf, self.mu_cdf = sampling_tables(model)

    # The policy's tables are built on the first rollout: a leader env makes an oracle on every
    # step, and exact-objective steps (zero-order, AMD's env) never sample from it.
    @functools.cached_property
    def pi(self) -> np.ndarray:
        """``(S, A)`` the policy's table."""
        return np.asarray(self.policy.action_probs(np.arange(self.n_states)), dtype=np.float64)

    @functools.cached_property
    def pi_cdf(self) -> np.ndarray:
        """``(S, A)`` its cumulative rows (ending at exactly 1)."""
        return normalised_cdf(self.pi)

    @functools.cached_property
    def entropy_table(self) -> np.ndarray:
        """``(S,)`` its entropy per state."""
        return policy_entropy(self.pi)

    @functools.cached_property
    def _checked_policy_tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(pi_cdf, pi, entropy_table)``, validated once (the model's tables were checked
        when :func:`sampling_tables` built them)."""
        from bilevel_envs._kernels import check_policy_tables

        S, A, _ = self.next_states.shape
        check_policy_tables(self.pi_cdf, self.pi, self.entropy_table, S, A)
        return self.pi_cdf, self.pi, self.entropy_table

    def rollout(self, rng, n_envs, n_steps, *, start_states=None, start_actions=None,
                lengths=None, auto_reset=True, time_limit=True) -> Rollouts:
        from bilevel_envs._kernels import _sample_tabular_chains

        starts, first_actions, lens = self.check_rollout_arguments(
            n_envs, n_steps, start_states, start_actions, lengths, self.n_states)
        pi_cdf, pi, entropy_table = self._checked_policy_tables
        u_init = rng.random(n_envs)
        u = rng.random((n_envs, n_steps, 3))
        shape = (n_envs, n_steps)
        obs, actions, next_obs, episode_step = (np.zeros(shape, np.int64) for _ in range(4))
        terminated, truncated, mask = (np.zeros(shape, np.bool_) for _ in range(3))
        action_probs, entropy = np.zeros(shape), np.zeros(shape)
        limit = self.max_episode_steps if (time_limit and self.max_episode_steps) else 0
        # Every input is valid by construction (tables checked above, starts, actions and
        # lengths by check_rollout_arguments, outputs allocated here): the kernel runs unchecked.
        _sample_tabular_chains(pi_cdf, self.next_states, self.next_cdf, self.mu_cdf, starts,
                               first_actions, lens, int(limit), bool(auto_reset), u_init, u,
                               obs, actions, next_obs, terminated, truncated, episode_step, mask,
                               pi, entropy_table, action_probs, entropy)
        # Padding is state 0 / action 0 (probability and entropy 0), masked out of everything
        # downstream.
        return fill_rewards(self.problem, self.x, self.context, obs, actions, next_obs,
                             terminated, truncated, episode_step, mask,
                             action_probs=action_probs, entropy=entropy)


class GymOracle(TrajectoryOracle):
    """The generic path: steps ``problem.follower_env(x, ξ)`` instances (Python loop over time).

    The follower env must put the leader's reward in ``info["leader_reward"]`` and accept
    ``reset(options={"state": s})`` when ``start_states`` are requested.
    """

    def rollout(self, rng, n_envs, n_steps, *, start_states=None, start_actions=None,
                lengths=None, auto_reset=True, time_limit=True) -> Rollouts:
        # Start states of a generic env may be continuous: all given, or all drawn from μ.
        _, first_actions, lens = self.check_rollout_arguments(n_envs, n_steps, None,
                                                              start_actions, lengths, None)
        if start_states is not None and len(start_states) != n_envs:
            raise ValueError(f"start_states must hold {n_envs} states; got {len(start_states)}")
        envs = [self._make_env(time_limit) for _ in range(n_envs)]
        seeds = rng.integers(0, 2**31 - 1, size=n_envs)
        current = []
        for e, env in enumerate(envs):
            options = None if start_states is None else {"state": start_states[e]}
            current.append(env.reset(seed=int(seeds[e]), options=options)[0])
        sample_obs = np.asarray(current[0])
        shape = (n_envs, n_steps)
        obs = np.zeros(shape + sample_obs.shape, sample_obs.dtype)
        next_obs = np.zeros_like(obs)
        actions, episode_step = np.zeros(shape, np.int64), np.zeros(shape, np.int64)
        rewards, leader_rewards = np.zeros(shape), np.zeros(shape)
        action_probs, entropy = np.zeros(shape), np.zeros(shape)
        terminated, truncated, mask = (np.zeros(shape, np.bool_) for _ in range(3))
        alive = np.ones(n_envs, dtype=bool)
        tau = np.zeros(n_envs, dtype=np.int64)
        for t in range(n_steps):
            alive &= t < lens
            live = np.flatnonzero(alive)
            if live.size == 0:
                break
            batch = np.stack([np.asarray(current[e]) for e in live])
            probs = np.asarray(self.policy.action_probs(batch), dtype=np.float64)
            chosen = sample_rows(probs, rng.random(live.size))
            if t == 0:
                forced = first_actions[live] >= 0
                chosen[forced] = first_actions[live][forced]
            for j, e in enumerate(live):
                a = int(chosen[j])
                o2, r, term, trunc, info = envs[e].step(a)
                obs[e, t], actions[e, t], next_obs[e, t] = current[e], a, o2
                rewards[e, t], leader_rewards[e, t] = r, info["leader_reward"]
                terminated[e, t], truncated[e, t] = term, trunc
                action_probs[e, t] = probs[j, a]
                entropy[e, t] = policy_entropy(probs[j])
                episode_step[e, t], mask[e, t] = tau[e], True
                tau[e] += 1
                current[e] = o2
                if term or trunc:
                    if auto_reset:
                        current[e] = envs[e].reset()[0]
                        tau[e] = 0
                    else:
                        alive[e] = False
        for env in envs:
            env.close()
        context = np.full(shape, self.context, dtype=np.int64)
        return Rollouts(obs, actions, next_obs, rewards, leader_rewards, terminated, truncated,
                        context, action_probs, entropy, episode_step, mask)

    def _make_env(self, time_limit: bool):
        env = self.problem.follower_env(self.x, self.context)
        if not time_limit and isinstance(env, TimeLimit):
            env = env.env  # infinite-horizon rollouts
        return env


#: the ways a leader env can sample rollouts (see :func:`make_oracle`)
ORACLE_BACKENDS = ("auto", "native", "tabular", "gym")


def make_oracle(problem: BilevelProblem, x: np.ndarray, context: Any, policy: Policy,
                backend: str = "auto", model: TabularModel | None = None,
                **kwargs: Any) -> TrajectoryOracle:
    """An oracle for ``policy`` in ``M_{x,ξ}``.

    Backends: ``"native"`` — the problem's own sampler (:meth:`BilevelProblem.make_oracle`, e.g.
    a vectorised simulator); ``"tabular"`` (fast path); ``"gym"`` (generic); ``"auto"`` — native
    if the problem has one, else tabular whenever the problem is tabular, else gym.

    ``model``: the tabular model of ``M_{x,ξ}`` if the caller has it (the tabular path then
    samples from it instead of asking the problem to build it again).
    """
    if backend in ("auto", "native"):
        native = problem.make_oracle(x, context, policy, **kwargs)
        if native is not None:
            return native
        if backend == "native":
            raise ValueError(f"{type(problem).__name__} has no native oracle "
                             "(BilevelProblem.make_oracle returned None); use backend='auto', "
                             "'tabular' or 'gym'")
        backend = "tabular" if problem.is_tabular else "gym"
    if backend == "tabular":
        return TabularOracle(problem, x, context, policy, model=model, **kwargs)
    if backend == "gym":
        return GymOracle(problem, x, context, policy, **kwargs)
    raise ValueError(f"backend must be one of {list(ORACLE_BACKENDS)}; got {backend!r}")


# ---------------------------------------------------------------------------- helpers
def sampling_tables(model: TabularModel) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sparse successor lists ``(S, A, K)``, their cumulative probabilities and μ's CDF.

    Cached on the model's shared ``cache`` (models built from the same ``P`` reuse it).
    """
    cached = model.cache.get("sampling_tables")
    if cached is not None and cached[0] is model.P:
        return cached[1]
    next_states, probs, _, _ = sparse_transitions(model)
    cdf = np.cumsum(probs, axis=-1)
    total = cdf[..., -1:]
    # Rows that are full distributions get an exact 1.0 at the end (x / x == 1 in IEEE).
    full = np.abs(total - 1.0) < 1e-9
    cdf = np.where(full, cdf / np.where(full, total, 1.0), cdf)
    tables = (next_states, np.ascontiguousarray(cdf), normalised_cdf(model.mu))
    from bilevel_envs._kernels import check_sampling_tables

    check_sampling_tables(*tables)  # once per model: the sampler trusts cached tables
    model.cache["sampling_tables"] = (model.P, tables)
    return tables



def fill_rewards(problem, x, context, obs, actions, next_obs, terminated, truncated,
                  episode_step, mask, action_probs, entropy) -> Rollouts:
    """Fill follower and leader rewards from the problem's per-transition functions."""
    # Reward arrays follow the mask: observations may be vectors (n, T, k).
    if mask.all():  # a continuous stream: no padding to skip
        flat = (-1,) + obs.shape[2:]
        o, a, n = obs.reshape(flat), actions.ravel(), next_obs.reshape(flat)
        rewards = problem.follower_reward(x, context, o, a, n).reshape(mask.shape)
        leader_rewards = problem.leader_reward(x, context, o, a, n).reshape(mask.shape)
    else:
        rewards = np.zeros(mask.shape)
        leader_rewards = np.zeros(mask.shape)
        if mask.any():
            o, a, n = obs[mask], actions[mask], next_obs[mask]
            rewards[mask] = problem.follower_reward(x, context, o, a, n)
            leader_rewards[mask] = problem.leader_reward(x, context, o, a, n)
    ctx = np.full(mask.shape, context, dtype=np.int64)
    return Rollouts(obs, actions, next_obs, rewards, leader_rewards, terminated, truncated, ctx,
                    action_probs, entropy, episode_step, mask)

