"""Batched follower trajectories: :class:`Rollouts` (plain arrays) and the protocol of what
samples them (:class:`TrajectorySampler`, the paper's oracle, Assumption 3.2).

The samplers themselves live in :mod:`bilevel_envs.oracles`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass
class Rollouts:
    """A batch of trajectories: every field is an array of shape ``(n_envs, T, ...)``.

    Chains run in parallel; episodes follow each other within a chain when auto-reset is on.
    Entries with ``mask == False`` are padding (a chain that stopped early).

    Attributes:
        obs, actions, next_obs: the transitions ``(s_t, a_t, s_{t+1})``; on termination
            ``next_obs`` repeats ``obs`` (the agent stays).
        rewards: follower rewards ``r(s_t, a_t, s_{t+1})``.
        leader_rewards: leader rewards ``r̄(s_t, a_t, s_{t+1})``.
        terminated, truncated: episode ends (termination in the MDP; time limit).
        context: the context index of each chain (repeated along time).
        action_probs: ``π(a_t | s_t)`` of the behaviour policy.
        entropy: ``H(π(·|s_t))`` of the behaviour policy.
        episode_step: time ``τ`` within the episode (0 at every episode start).
        mask: ``True`` for real transitions.
    """

    obs: np.ndarray
    actions: np.ndarray
    next_obs: np.ndarray
    rewards: np.ndarray
    leader_rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    context: np.ndarray
    action_probs: np.ndarray
    entropy: np.ndarray
    episode_step: np.ndarray
    mask: np.ndarray

    @property
    def n_envs(self) -> int:
        return self.mask.shape[0]

    @property
    def n_steps(self) -> int:
        return self.mask.shape[1]

    @property
    def n_transitions(self) -> int:
        return int(self.mask.sum())

    @property
    def ends(self) -> np.ndarray:
        """``terminated | truncated``: the last step of each episode."""
        return self.terminated | self.truncated

    def to_dict(self, copy: bool = True) -> dict[str, np.ndarray]:
        """The rollouts as a plain dict of arrays (copies unless ``copy=False``)."""
        return {f.name: np.array(getattr(self, f.name), copy=copy)
                for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, np.ndarray]) -> Rollouts:
        return cls(**{f.name: np.asarray(data[f.name]) for f in dataclasses.fields(cls)})

    @staticmethod
    def concatenate(parts: list[Rollouts]) -> Rollouts:
        """Stack batches along the env axis, padding shorter ones in time (``mask = False``)."""
        if len(parts) == 1:
            return parts[0]
        T = max(p.n_steps for p in parts)
        fields = {}
        for f in dataclasses.fields(Rollouts):
            arrays = []
            for p in parts:
                a = getattr(p, f.name)
                pad = [(0, 0), (0, T - a.shape[1])] + [(0, 0)] * (a.ndim - 2)
                arrays.append(np.pad(a, pad))
            fields[f.name] = np.concatenate(arrays, axis=0)
        return Rollouts(**fields)

    def episode_returns(self, gamma: float, leader: bool = True) -> np.ndarray:
        """Discounted returns of the episodes that end inside the batch.

        A chain without any finished episode contributes its (truncated) first episode, so the
        result is never empty for a non-empty batch.
        """
        from bilevel_envs._rollout_kernels import episode_returns

        values = self.leader_rewards if leader else self.rewards
        return episode_returns(values.astype(np.float64, copy=False), self.mask, self.ends,
                               self.episode_step, gamma)



@runtime_checkable
class TrajectorySampler(Protocol):
    """Samples :class:`Rollouts` of one follower policy in ``M_{x,ξ}`` (paper Assumption 3.2);
    :class:`bilevel_envs.oracles.TrajectoryOracle` is the library's implementation."""

    def rollout(self, rng: np.random.Generator, n_envs: int, n_steps: int, *,
                start_states=None, start_actions=None, lengths=None, auto_reset: bool = True,
                time_limit: bool = True) -> Rollouts:
        """Sample ``n_envs`` chains of ``n_steps`` steps (see
        :meth:`bilevel_envs.oracles.TrajectoryOracle.rollout`)."""
        ...
