"""Zero-order leader (paper Alg. 10): finite differences along random Gaussian directions.

It needs nothing but the env's reward (an estimate of J), so it works with every env and every
follower. Two oracle queries per iteration:

    for t = 1, 2, ...:
        z ~ N(0, I_d);  u_t = C / t
        f0 ← J(x_t)            f1 ← J(x_t + u_t z)          (two env.step calls, same ξ)
        ĝ = (f1 − f0) / u_t · z                             (E ĝ = ∇ of the Gaussian-smoothed J)
        x_{t+1} ← Π_X(x_t + α clip(ĝ))

Both queries run under the env's common random numbers when it offers them (the same contexts and
rollout randomness for both points), as the authors' sampled-context evaluation did
(docs/reference.md §3.2).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from bilevel_envs.validation import check_bool, check_float
from leaders.base import Leader


class ZeroOrder(Leader):
    """Zero-order gradient ascent (paper Alg. 10).

    Args:
        env: any Gymnasium env whose action is ``x`` (a ``Box``) and whose reward estimates J.
        learning_rate: step size α (paper grid: 1.0, 0.5, 0.1, 0.05, 0.01).
        perturbation_constant: ``C`` in ``u_t = C/t`` (paper grid: 0.1, 0.5, 1.0, 2.0, 5.0).
        common_random_numbers: evaluate both points with the same env randomness when the env
            supports it (``env.unwrapped.common_random_numbers()``).
        **kwargs: :class:`~leaders.base.Leader` arguments.

    The perturbed point is clipped onto the box ``X`` before it is queried.
    """

    algorithm: ClassVar[str] = "zero_order"
    requires_problem: ClassVar[bool] = False

    def __init__(self, env, learning_rate: float = 0.1, perturbation_constant: float = 1.0,
                 common_random_numbers: bool = True, **kwargs: Any):
        super().__init__(env, learning_rate=learning_rate, **kwargs)
        self.perturbation_constant = check_float("perturbation_constant", perturbation_constant,
                                                 0.0, low_open=True)
        self.common_random_numbers = check_bool("common_random_numbers", common_random_numbers)

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "perturbation_constant": self.perturbation_constant,
                "common_random_numbers": self.common_random_numbers}

    def estimate_gradient(self) -> tuple[np.ndarray, dict[str, Any]]:
        u = self.perturbation_constant / (self.num_iterations + 1)
        z = self.rng.standard_normal(self.x.shape)
        perturbed = np.clip(self.x + u * z, self.x_space.low, self.x_space.high)
        with self.paired_queries(self.common_random_numbers):
            f0, info = self.query(self.x)
            f1, _ = self.query(perturbed)
        grad = (f1 - f0) / u * z
        return grad, {"objective_estimate": f0, "contexts": info.get("contexts", []),
                      "perturbation": u}
