"""What Q-accuracy does a 5 % soft-optimality gap ask of a household? Exact, no training.

For each preference group at the initial taxes (41-cell grid economy):

* the gap of the Boltzmann policy ``softmax((Q* + ε)/λ)`` with independent errors
  ``ε ~ N(0, σ²)`` on every (cell, action), mean ± s.d. over 5 draws: the error a learner may
  make and still be within the target;
* the standard deviation of one sampled soft Bellman target ``r + γ V*(s')`` around its mean,
  weighted by where the soft-optimal households go (``d*(s) π*(a|s)``), and the effective
  numbers of cells, actions per cell and (cell, action) pairs they use (exponentials of the
  entropies of those weights).

An unbiased estimate of one ``Q(s, a)`` from ``n`` sampled targets has error ``sd/√n``; with
the σ the target allows this is the number of samples per pair a learner without
generalisation across actions needs.

    python benchmarks/bench_household_gap_floor.py
"""

from __future__ import annotations

import numpy as np

from bilevel_envs.envs.tax_design.problem import TaxDesignTabular
from bilevel_envs.follower_quality import (
    DEFAULT_GAP_THRESHOLD,
    discounted_occupancy,
    follower_quality,
)
from bilevel_envs.tabular import expected_next, policy_entropy, softmax_policy, solve_follower

SIGMAS = (0.05, 0.1, 0.2, 0.5)
DRAWS = 5


def perplexity(weights: np.ndarray) -> float:
    """``exp`` of the entropy of normalised weights: how many items they effectively use."""
    return float(np.exp(policy_entropy(weights.ravel() / weights.sum())))


def main() -> None:
    problem = TaxDesignTabular()
    grid = problem.discretised(41)
    lam = problem.lam
    x0 = np.full(4, 0.3)
    for group in range(problem.n_contexts):
        model = grid.tabular(x0, group)
        solution = solve_follower(model, lam)
        print(f"group {group} at x0 (V* = {solution.v @ model.mu:.2f}):")
        mean_gaps = []
        for sigma in SIGMAS:
            gaps = [follower_quality(model, lam, softmax_policy(
                solution.q + np.random.default_rng(seed).normal(0.0, sigma, solution.q.shape),
                lam))[0].gap for seed in range(DRAWS)]
            mean_gaps.append(np.mean(gaps))
            print(f"  Q* + N(0, {sigma}²) errors: gap {np.mean(gaps):.4f} ± {np.std(gaps):.4f}")
        # V*(s') for every successor; the target's variance given (s, a) under P(·|s, a).
        mean = expected_next(model.P, solution.v)
        second = expected_next(model.P, solution.v ** 2)
        sd = model.gamma * np.sqrt(np.maximum(second - mean ** 2, 0.0))
        occupancy = discounted_occupancy(model, solution.pi)
        weights = occupancy[:, None] * solution.pi
        target_sd = float(np.sqrt((weights * sd ** 2).sum() / weights.sum()))
        per_cell = np.exp(policy_entropy(solution.pi))
        print(f"  one sampled target's s.d. where π* goes: {target_sd:.2f}; effective cells "
              f"{perplexity(occupancy):.1f}, actions per cell "
              f"{occupancy @ per_cell / occupancy.sum():.1f}, pairs {perplexity(weights):.0f}")
        # log-log interpolation of the rows above (the gap grows like σ² for small σ)
        sigma_5pct = float(np.exp(np.interp(np.log(DEFAULT_GAP_THRESHOLD), np.log(mean_gaps),
                                            np.log(SIGMAS))))
        print(f"  σ for a {DEFAULT_GAP_THRESHOLD:.0%} gap ≈ {sigma_5pct:.3f}: "
              f"{(target_sd / sigma_5pct) ** 2:,.0f} samples per pair")


if __name__ == "__main__":
    main()
