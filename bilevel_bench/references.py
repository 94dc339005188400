"""Reference optima for instances without a closed form: the best of several local searches
on the exact objective."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def multistart_maximum(value_and_grad: Callable[[np.ndarray], tuple[float, np.ndarray]],
                       low: np.ndarray, high: np.ndarray, starts: Sequence[np.ndarray]
                       ) -> tuple[float, np.ndarray]:
    """The best local maximum of a smooth objective on the box ``[low, high]`` found by
    L-BFGS-B (exact gradients) from each of ``starts``: ``(value, x)``. A reference for
    instances without a closed form (a lower bound on the true maximum)."""
    from scipy.optimize import minimize

    def negative(x):
        value, grad = value_and_grad(x)
        return -value, -np.asarray(grad, dtype=np.float64)

    best_value, best_x = -np.inf, None
    for start in starts:
        result = minimize(negative, np.clip(start, low, high), jac=True, method="L-BFGS-B",
                          bounds=list(zip(low, high)))
        if -result.fun > best_value:
            best_value, best_x = float(-result.fun), np.asarray(result.x)
    return best_value, best_x
