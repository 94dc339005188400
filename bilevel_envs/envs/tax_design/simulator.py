"""The vectorised household simulator of tax design: every chain steps together in NumPy."""

from __future__ import annotations

import numba as nb
import numpy as np

from bilevel_envs.oracles import TrajectoryOracle, fill_rewards
from bilevel_envs.rollouts import Rollouts


class HouseholdOracle(TrajectoryOracle):
    """Vectorised simulator of :class:`TaxDesign`: all chains step together in NumPy.

    One Python iteration per time step (not per transition): the policy is queried once for the
    whole batch of live chains, actions and noise are drawn by inversion from pre-drawn uniforms
    (so equal seeds give equal trajectories) and the assets move in one array operation.
    Rewards and leader rewards are filled in one batched call at the end.

    ``start_states`` are asset levels (or observations of the problem), one per chain; ``NaN``
    draws that chain's start from μ. ``start_actions`` as in :class:`TrajectoryOracle`.
    """

    def rollout(self, rng, n_envs, n_steps, *, start_states=None, start_actions=None,
                lengths=None, auto_reset=True, time_limit=True) -> Rollouts:
        problem = self.problem  # a TaxDesign: its batched sampler and observation helpers
        _, first_actions, lens = self.check_rollout_arguments(n_envs, n_steps, None,
                                                              start_actions, lengths, None)
        u_init = rng.random(n_envs)
        u = rng.random((n_envs, n_steps, 3))  # action, noise, reset state
        current = problem.sample_initial_obs(u_init)
        if start_states is not None:
            given = np.asarray(start_states, dtype=np.float64).reshape(-1)
            if given.shape != (n_envs,):
                raise ValueError(f"start_states must hold {n_envs} asset levels; got shape "
                                 f"{np.shape(start_states)}")
            chosen = ~np.isnan(given)
            for e in np.flatnonzero(chosen):
                current[e] = problem.check_obs(
                    given[e] if current.ndim > 1 else int(given[e]), name="start_states entry")

        shape = (n_envs, n_steps)
        obs = np.zeros(shape + current.shape[1:], current.dtype)
        next_obs = np.zeros_like(obs)
        actions, episode_step = np.zeros(shape, np.int64), np.zeros(shape, np.int64)
        action_probs, entropy = np.zeros(shape), np.zeros(shape)
        terminated, truncated, mask = (np.zeros(shape, np.bool_) for _ in range(3))
        limit = self.max_episode_steps if (time_limit and self.max_episode_steps) else 0
        alive = np.ones(n_envs, dtype=bool)
        tau = np.zeros(n_envs, dtype=np.int64)
        no_forcing = np.full(n_envs, -1, dtype=np.int64)
        # Policies that know their entropies (tables) spare a log per action and transition.
        policy_entropy = getattr(self.policy, "entropy", None)
        for t in range(n_steps):
            alive &= t < lens
            live = np.flatnonzero(alive)
            if live.size == 0:
                break
            state = current[live]
            probs = np.ascontiguousarray(self.policy.action_probs(state), dtype=np.float64)
            known_entropy = policy_entropy is not None
            chosen_actions, taken, row_entropy = sample_categorical(
                probs, u[live, t, 0], not known_entropy, first_actions[live] if t == 0 else
                no_forcing[:live.size])
            successor = problem.sample_next_obs(self.x, state, chosen_actions, u[live, t, 1])
            obs[live, t], next_obs[live, t], actions[live, t] = state, successor, chosen_actions
            action_probs[live, t] = taken
            entropy[live, t] = policy_entropy(state) if known_entropy else row_entropy
            episode_step[live, t], mask[live, t] = tau[live], True
            tau[live] += 1
            current[live] = successor
            if limit:
                ended = live[tau[live] >= limit]
                truncated[ended, t] = True
                if auto_reset:
                    current[ended] = problem.sample_initial_obs(u[ended, t, 2])
                    tau[ended] = 0
                else:
                    alive[ended] = False
        return fill_rewards(problem, self.x, self.context, obs, actions, next_obs, terminated,
                             truncated, episode_step, mask, action_probs, entropy)


@nb.njit(cache=True, nogil=True)
def sample_categorical(probs, u, with_entropy, forced):
    """One action per row of ``probs`` by inversion of ``u`` (``forced[i] >= 0`` overrides it).

    Returns the actions, their probabilities and (if ``with_entropy``) the rows' entropies; one
    pass over each row, no temporaries (1,250 actions per household make NumPy's cumsum and log
    the simulator's bottleneck).
    """
    n, n_actions = probs.shape
    actions = np.empty(n, np.int64)
    taken = np.empty(n)
    entropy = np.zeros(n)
    for i in range(n):
        total = 0.0
        for a in range(n_actions):
            total += probs[i, a]
        k = forced[i]
        if k < 0:
            target = u[i] * total
            acc = 0.0
            k = n_actions - 1
            for a in range(n_actions):
                acc += probs[i, a]
                if acc > target:
                    k = a
                    break
        actions[i] = k
        taken[i] = probs[i, k]
        if with_entropy:
            h = 0.0
            for a in range(n_actions):
                p = probs[i, a] / total
                if p > 0.0:
                    h -= p * np.log(p)
            entropy[i] = h
    return actions, taken, entropy
