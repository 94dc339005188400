"""The typed record of one leader step: what every follower did, kept by the leader env for the
algorithms that read trajectories (HPGD) and for the application envs (RLHF's metrics)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bilevel_envs.budget import Budget
from bilevel_envs.follower_quality import FollowerQuality
from bilevel_envs.followers.base import FollowerResponse
from bilevel_envs.problem import TrajectoryPairs
from bilevel_envs.rollouts import Rollouts, TrajectorySampler
from bilevel_envs.tabular import TabularModel


@dataclass(frozen=True)
class FollowerStep:
    """One follower's part of a leader step.

    Attributes:
        context: the context index ``ξ`` the follower served.
        weight: its weight in the step's objective (``P(ξ)`` or ``1/n_followers``).
        response: the follower's response to ``x`` (policy, warm start, stats).
        oracle: the sampler of the follower's policy in ``M_{x,ξ}`` (restarts, paper Alg. 2);
            in a leader env's record, a :class:`~bilevel_envs.budget.CountedSampler` that charges
            what it samples to the env's budget.
        rollouts: the follower's sampled trajectories, or ``None`` without rollouts.
        model: the exact model of ``M_{x,ξ}`` when the problem is tabular (built by the follower
            or by the env once this step), else ``None``.
        pairs: the trajectory pairs of the rollouts for a pairwise objective (RLHF), else ``None``.
        objective_estimate: the Monte-Carlo estimate of ``J_ξ(x)`` from the rollouts (``NaN``
            without rollouts).
    """

    context: int
    weight: float
    response: FollowerResponse
    oracle: TrajectorySampler
    rollouts: Rollouts | None
    model: TabularModel | None
    pairs: TrajectoryPairs | None
    objective_estimate: float


@dataclass(frozen=True)
class LeaderStep:
    """The record of one ``LeaderEnv.step(x)``.

    Attributes:
        x: the validated leader parameter.
        followers: one :class:`FollowerStep` per follower, in context order of the step.
        objective_estimate: the context-weighted Monte-Carlo estimate of ``J(x)``.
        objective_exact: the exact value of the followers' policies (``objective="exact"``), or
            ``None``.
        reward: what ``step`` returned (the exact value when computed, else the estimate).
        budget: what the step consumed: its followers' costs and its rollouts' transitions
            (:mod:`bilevel_envs.budget`).
        quality: each follower's exact quality (soft-optimality gap, visited TV) when the env
            measures it (``follower_quality``), else ``None``.
    """

    x: np.ndarray
    followers: tuple[FollowerStep, ...]
    objective_estimate: float
    objective_exact: float | None
    reward: float
    budget: Budget = Budget()
    quality: tuple[FollowerQuality, ...] | None = None

    @property
    def contexts(self) -> list[int]:
        """The context of each follower."""
        return [f.context for f in self.followers]

    @property
    def weights(self) -> np.ndarray:
        """The weight of each follower."""
        return np.array([f.weight for f in self.followers])
