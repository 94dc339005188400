"""Two-point random search with common random numbers: central differences along random
directions on the unit sphere.

Like the zero-order method (paper Alg. 10, :mod:`leaders.zero_order`) it needs nothing but the
env's reward (an estimate of J), so it works with every env and follower; it differs in the
central (two-sided) difference, the fixed radius δ and the directions on the unit sphere:

    for t = 0, 1, ...:
        for i = 1 .. b:                                      (b = n_directions)
            u_i ~ uniform on the unit sphere of R^d          (a normalised Gaussian, seeded)
            x± = Π_X(x_t ± δ u_i)
            J± ← J(x±)                (two env.step calls with common random numbers)
            ĝ_i = d · (J+ − J−) / ((x+ − x−)·u_i) · u_i
        ĝ = mean_i ĝ_i
        x_{t+1} ← Π_X(x_t + α clip(ĝ))

Away from the bounds ``(x+ − x−)·u = 2δ`` and, with exact ``J``, ``E ĝ`` is the gradient of
the ball-smoothed objective ``J_δ(x) = E_{v ~ unit ball} J(x + δ v)``, which is ``∇J(x) +
O(δ²)`` for smooth ``J`` (the factor ``d`` undoes ``E[u uᵀ] = I/d``). Near the bounds the
difference is divided by the distance actually travelled along ``u``.

Common random numbers: both points of a pair are evaluated from the same env random state (the
env's ``common_random_numbers()``: the same contexts, follower seeds and rollout uniforms), so the
noise of ``J+ − J−`` is that of a difference of nearby points, not of two independent estimates.
The followers' warm starts are not rewound: the second query starts from the first's response,
which matters only for followers that do not solve to convergence.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from bilevel_envs.validation import check_bool, check_float, check_int
from leaders.base import Leader


class RandomSearch(Leader):
    """Two-point random search with common random numbers (see the module docstring).

    Each iteration costs ``2 · n_directions`` env steps. The ``objective_estimate`` of the
    history is the mean of the ``J±`` of the iteration (an ``O(δ²)``-biased estimate of
    ``J(x_t)``).

    Args:
        env: any Gymnasium env whose action is ``x`` (a ``Box``) and whose reward estimates J.
        learning_rate: step size α.
        perturbation: the radius δ > 0 of the finite differences, in the units of ``x``.
        n_directions: b, directions averaged per iteration.
        common_random_numbers: evaluate both points of a pair with the same env randomness when
            the env supports it (``env.unwrapped.common_random_numbers()``).
        **kwargs: :class:`~leaders.base.Leader` arguments.
    """

    algorithm: ClassVar[str] = "random_search"
    requires_problem: ClassVar[bool] = False

    def __init__(self, env, learning_rate: float = 0.1, perturbation: float = 0.1,
                 n_directions: int = 1, common_random_numbers: bool = True, **kwargs: Any):
        super().__init__(env, learning_rate=learning_rate, **kwargs)
        self.perturbation = check_float("perturbation", perturbation, 0.0, low_open=True)
        self.n_directions = check_int("n_directions", n_directions, 1)
        self.common_random_numbers = check_bool("common_random_numbers", common_random_numbers)

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "perturbation": self.perturbation,
                "n_directions": self.n_directions,
                "common_random_numbers": self.common_random_numbers}

    def sample_direction(self) -> np.ndarray:
        """A direction uniform on the unit sphere (a normalised standard Gaussian)."""
        z = self.rng.standard_normal(self.x.shape)
        return z / np.linalg.norm(z)

    def estimate_gradient(self) -> tuple[np.ndarray, dict[str, Any]]:
        low, high = self.x_space.low, self.x_space.high
        grad, values, contexts = np.zeros(self.x.shape), [], []
        for _ in range(self.n_directions):
            u = self.sample_direction()
            plus = np.clip(self.x + self.perturbation * u, low, high)
            minus = np.clip(self.x - self.perturbation * u, low, high)
            with self.paired_queries(self.common_random_numbers):
                j_plus, info = self.query(plus)
                j_minus, _ = self.query(minus)
            span = float(np.sum((plus - minus) * u))
            if span > 0:  # both points clipped onto one: no information along u
                grad += self.x.size * (j_plus - j_minus) / span * u
            values += [j_plus, j_minus]
            contexts += list(info.get("contexts", []))
        return grad / self.n_directions, {"objective_estimate": float(np.mean(values)),
                                          "contexts": contexts}
