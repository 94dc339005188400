"""HPGD — Hyper Policy Gradient Descent (paper Alg. 1, estimators Alg. 2 and Alg. 5).

Thoma et al., "Contextual Bilevel Reinforcement Learning for Incentive Alignment", NeurIPS 2024.

The leader only observes the followers' trajectories (it never reads the tabular model): every
iteration the followers respond to ``x_t`` (any learner: soft VI, soft Q-learning, SB3 agents)
and HPGD estimates ``dJ/dx`` from their rollouts plus the problem's derivative terms
``∂x r``, ``∂x r̄``, ``∂x log P``, ``∂x log μ`` (and ``∂x ℓ`` of a trajectory-level objective).

    for t = 0, 1, ...:
        ξ ~ P_ξ; the followers respond to x_t                 (LeaderEnv.step)
        if J is decomposable:
            ĝ ← DecomposableGradientEstimator(ξ, x_t, oracle)  (Alg. 5 + Alg. 2, or every-visit)
        else:                                                  (RLHF: J = E ℓ(τ0, τ1; x))
            ĝ ← mean over pairs of ∂xℓ + (ℓ − b) Σ_{τ0,τ1} Σ_t ∂Â(s_t, a_t)/λ   (Alg. 2 for ∂Â)
        x_{t+1} ← Π_X(x_t + α clip(ĝ))                         (ascent on J; Leader base class)
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from bilevel_envs.step_record import FollowerStep
from bilevel_envs.validation import check_allocation, check_bool, check_int
from leaders.base import Leader
from leaders.estimators import (
    BATCH_ESTIMATORS,
    ESTIMATORS,
    every_visit_estimate,
    paper_estimate,
    trajectory_estimate,
)

#: estimators of a decomposable J; ``"trajectory"`` is the one for trajectory-level objectives
DECOMPOSABLE_ESTIMATORS = ("every_visit", "every_visit_loo", "paper")


class HPGD(Leader):
    """Hyper Policy Gradient Descent (paper Alg. 1) on a bilevel leader env.

    Args:
        env: a leader env (``gym.make("bilevel/...")``) — any follower.
        learning_rate: step size α (paper grid: 1.0, 0.5, 0.1, 0.05, 0.01).
        estimator: for a decomposable ``J``: ``"every_visit"`` (the default: the authors' batch
            estimator over the env's rollouts, used for their Table 3; consistent, low variance;
            discrete observations, or continuous ones aggregated into the problem's observation
            cells — tax design's asset cells — which adds a small bias, like the authors' value
            networks), ``"every_visit_loo"`` (the same with leave-one-out leader advantages: each
            visit's ``Ā(s, a)`` from the other visits of ``(s, a)``, which removes the bias from a
            visit weighting its own future — large with many actions, e.g. tax design's 1,250) or
            ``"paper"`` (Alg. 5 with Alg. 2 restarts: unbiased for any problem, but its noise is
            ~10³–10⁴ × the gradient per sample on Four-Rooms because ``∂Â`` is scaled by
            ``1/(λ(1−γ̄))`` — measurements in docs/table3.md). For a
            trajectory-level ``J`` (``problem.decomposable`` False, e.g. RLHF): ``"trajectory"``
            (the default there; the score-function form over the pairs of the env's rollouts,
            :func:`~leaders.estimators.trajectory_estimate`). ``None``: the default for the
            problem.
        n_samples: Alg. 5 samples averaged per iteration (``"paper"`` only; ``"trajectory"`` uses
            every pair of the env's rollouts).
        n_inner: Alg. 2 restart pairs averaged per ``∂Â`` (``"paper"`` and ``"trajectory"``).
        coupled_restarts: common random numbers for the ∂Q̂/∂V̂ restarts (``"paper"`` and
            ``"trajectory"``; unbiased, 3–5× less noise).
        **kwargs: :class:`~leaders.base.Leader` arguments (``max_grad_norm``, ``optimizer``,
            ``seed``, ``x0``, ``log_dir``, ...).

    Raises:
        ValueError: for an estimator that does not fit the problem's objective, or without the
            rollouts an estimator needs.
    """

    algorithm: ClassVar[str] = "hpgd"

    def __init__(self, env, learning_rate: float = 0.1, estimator: str | None = None,
                 n_samples: int = 10, n_inner: int = 1, coupled_restarts: bool = False,
                 **kwargs: Any):
        super().__init__(env, learning_rate=learning_rate, **kwargs)
        decomposable = self.problem.decomposable
        if estimator is None:
            estimator = "every_visit" if decomposable else "trajectory"
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}; got {estimator!r}")
        if decomposable and estimator == "trajectory":
            raise ValueError(f"estimator='trajectory' is for trajectory-level objectives; "
                             f"{type(self.problem).__name__} is decomposable: use one of "
                             f"{DECOMPOSABLE_ESTIMATORS}")
        if not decomposable and estimator != "trajectory":
            raise ValueError(f"estimator={estimator!r} estimates a decomposable objective; "
                             f"{type(self.problem).__name__} has a trajectory-level objective: "
                             "use estimator='trajectory'")
        if estimator in (*BATCH_ESTIMATORS, "trajectory"):
            if getattr(env.unwrapped, "n_rollout_steps", 0) < 1:
                raise ValueError(f"estimator={estimator!r} needs the env's rollouts "
                                 "(n_rollout_steps >= 1)")
        if estimator in BATCH_ESTIMATORS and self.problem.n_observation_cells is None:
            raise ValueError(f"estimator={estimator!r} needs discrete follower observations "
                             "or a state aggregation (problem.observation_index); use "
                             "estimator='paper' for this problem")
        self.estimator = estimator
        self.n_samples, self.n_inner = check_int("n_samples", n_samples, 1), check_int(
            "n_inner", n_inner, 1)
        check_allocation("n_samples", self.n_samples)  # Alg. 5's rollouts are one batch
        self.coupled_restarts = check_bool("coupled_restarts", coupled_restarts)

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "estimator": self.estimator,
                "n_samples": self.n_samples, "n_inner": self.n_inner,
                "coupled_restarts": self.coupled_restarts}

    def estimate_gradient(self) -> tuple[np.ndarray, dict[str, Any]]:
        # The followers respond to x_t; we observe their trajectories (and the env's J estimate).
        reward, info = self.query(self.x)
        step = self.env.unwrapped.last_step
        grad = np.zeros(self.problem.n_params)
        for follower in step.followers:
            grad += follower.weight * self._follower_gradient(follower)
        return grad, {"objective_estimate": reward, "contexts": step.contexts}

    def _follower_gradient(self, follower: FollowerStep) -> np.ndarray:
        """The estimate of ``dJ_ξ/dx`` from one follower of the last env step."""
        if self.estimator == "paper":
            terms = paper_estimate(self.problem, self.x, follower.context, follower.oracle,
                                   self.rng, self.n_samples, self.n_inner, self.coupled_restarts)
            return terms.total() / self.n_samples
        if self.estimator in BATCH_ESTIMATORS:
            return every_visit_estimate(self.problem, self.x, follower.context, follower.rollouts,
                                        leave_one_out=self.estimator == "every_visit_loo").total()
        terms = trajectory_estimate(self.problem, self.x, follower.context, follower.rollouts,
                                    follower.oracle, self.rng, self.n_inner,
                                    self.coupled_restarts, pairs=follower.pairs)
        return terms.total() / terms.n_samples
