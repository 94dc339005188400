"""HPGD — Hyper Policy Gradient Descent (paper Alg. 1, estimators Alg. 2 and Alg. 5).

Thoma et al., "Contextual Bilevel Reinforcement Learning for Incentive Alignment", NeurIPS 2024.

The leader only observes the followers' trajectories (it never reads the tabular model): every
iteration the followers respond to ``x_t`` (any learner: soft VI, soft Q-learning, SB3 agents)
and HPGD estimates ``dJ/dx`` from their rollouts plus the problem's derivative terms
``∂x r``, ``∂x r̄``, ``∂x log P``, ``∂x log μ``.

    for t = 0, 1, ...:
        ξ ~ P_ξ; the followers respond to x_t                 (LeaderEnv.step)
        ĝ ← DecomposableGradientEstimator(ξ, x_t, oracle)      (Alg. 5 + Alg. 2, or every-visit)
        x_{t+1} ← Π_X(x_t + α clip(ĝ))                         (ascent on J; Leader base class)
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from leaders.base import Leader
from leaders.estimators import (BATCH_ESTIMATORS, ESTIMATORS, Rollouts, every_visit_estimate,
                                paper_estimate)


class HPGD(Leader):
    """Hyper Policy Gradient Descent (paper Alg. 1) on a bilevel leader env.

    Args:
        env: a leader env (``gym.make("bilevel/...")``) — any follower.
        learning_rate: step size α (paper grid: 1.0, 0.5, 0.1, 0.05, 0.01).
        estimator: ``"every_visit"`` (default: the authors' batch estimator over the env's
            rollouts, used for their Table 3; consistent, low variance; discrete observations,
            or continuous ones aggregated into the problem's observation cells — tax design's
            asset cells — which adds a small bias, like the authors' value networks),
            ``"every_visit_loo"`` (the same with leave-one-out leader advantages: each visit's
            ``Ā(s, a)`` from the other visits of ``(s, a)``, which removes the bias from a visit
            weighting its own future — large with many actions, e.g. tax design's 1,250)
            or ``"paper"`` (Alg. 5 with Alg. 2 restarts: unbiased for any problem, but its noise
            is ~10³–10⁴ × the gradient per sample on Four-Rooms because ``∂Â`` is scaled by
            ``1/(λ(1−γ̄))`` — see the closing note of issue 3 for the measurements).
        n_samples: Alg. 5 samples averaged per iteration (``"paper"`` only).
        n_inner: Alg. 2 restart pairs averaged per ``∂Â`` (``"paper"`` only).
        coupled_restarts: common random numbers for the ∂Q̂/∂V̂ restarts (``"paper"`` only;
            unbiased, 3–5× less noise).
        **kwargs: :class:`~leaders.base.Leader` arguments (``max_grad_norm``, ``optimizer``,
            ``seed``, ``x0``, ``log_dir``, ...).
    """

    algorithm: ClassVar[str] = "hpgd"

    def __init__(self, env, learning_rate: float = 0.1, estimator: str = "every_visit",
                 n_samples: int = 10, n_inner: int = 1, coupled_restarts: bool = False,
                 **kwargs: Any):
        super().__init__(env, learning_rate=learning_rate, **kwargs)
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}; got {estimator!r}")
        if estimator in BATCH_ESTIMATORS:
            if getattr(env.unwrapped, "n_rollout_steps", 0) < 1:
                raise ValueError(f"estimator={estimator!r} needs the env's rollouts "
                                 "(n_rollout_steps >= 1)")
            if self.problem.n_observation_cells is None:
                raise ValueError(f"estimator={estimator!r} needs discrete follower observations "
                                 "or a state aggregation (problem.observation_index); use "
                                 "estimator='paper' for this problem")
        for name, value in (("n_samples", n_samples), ("n_inner", n_inner)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}")
        self.estimator, self.n_samples, self.n_inner = estimator, int(n_samples), int(n_inner)
        self.coupled_restarts = bool(coupled_restarts)

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "estimator": self.estimator,
                "n_samples": self.n_samples, "n_inner": self.n_inner,
                "coupled_restarts": self.coupled_restarts}

    def estimate_gradient(self) -> tuple[np.ndarray, dict[str, Any]]:
        # The followers respond to x_t; we observe their trajectories (and the env's J estimate).
        _, reward, _, truncated, info = self.env.step(self.x)
        env = self.env.unwrapped
        grad = np.zeros(self.problem.n_params)
        for i, (context, weight) in enumerate(zip(info["contexts"], info["context_weights"])):
            if self.estimator in BATCH_ESTIMATORS:
                chains = slice(i * env.n_envs, (i + 1) * env.n_envs)
                rollouts = Rollouts.from_dict({k: v[chains] for k, v in info["rollouts"].items()})
                terms = every_visit_estimate(self.problem, self.x, context, rollouts,
                                             leave_one_out=self.estimator == "every_visit_loo")
                grad += weight * terms.total()
            else:
                terms = paper_estimate(self.problem, self.x, context, env.last_oracles[i],
                                       self.rng, self.n_samples, self.n_inner,
                                       self.coupled_restarts)
                grad += weight * terms.total() / self.n_samples
        return grad, {"objective_estimate": reward, "contexts": info["contexts"],
                      "truncated": truncated}
