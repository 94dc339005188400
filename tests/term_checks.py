"""Per-term checks of the hypergradient estimators and the negative controls that prove their power.

An estimate splits into the terms of the hypergradient (``leaders.estimators.TERMS``: direct
``∂r̄``, best response ``∂A·Q̄/λ``, the leader's ``∂log P`` score, the ``∂log μ`` score), each
with an exact value from the tabular model (:func:`bilevel_envs.hypergradient.hypergradient_terms`).
The check of a term compares the mean of its per-sample estimates with that value, along every
coordinate and along the exact term's direction, in measured standard errors. Its power is shown
on the same samples: the term scaled by 0.95 or by 1.05 — a 5 % error — must fail the check.
"""

from __future__ import annotations

import numpy as np

from bilevel_envs.envs.garnet import GarnetProblem
from bilevel_envs.exact import ExactSolver
from bilevel_envs.hypergradient import hypergradient_terms
from bilevel_envs.tabular import evaluate_policy
from bilevel_envs.testing import z_scores
from leaders.estimators import TERMS

#: a check passes when every |z| is below this
Z_MAX = 4.0
#: the negative controls: a term off by −5 % and by +5 %
CONTROL_SCALES = (0.95, 1.05)


def check_terms(samples: dict[str, np.ndarray], exact: dict[str, np.ndarray]
                ) -> dict[str, dict[float, float]]:
    """Assert that every term passes its check and that its ±5 % controls fail it.

    Args:
        samples: term -> ``(N, d)`` per-sample estimates of the term (i.i.d. rows).
        exact: term -> ``(d,)`` the term's exact mean (or ``(M, d)`` reference samples, see
            :func:`bilevel_envs.testing.z_scores`).

    Returns:
        term -> {1.0: max |z| of the estimator, 0.95: …, 1.05: …} (the controls' |z|).
    """
    table = {}
    for term, values in samples.items():
        z = {scale: float(np.abs(z_scores(scale * values, exact[term])).max())
             for scale in (1.0, *CONTROL_SCALES)}
        table[term] = z
        assert z[1.0] < Z_MAX, f"{term}: |z| = {z[1.0]:.2f} against its exact value"
        for scale in CONTROL_SCALES:
            assert z[scale] > Z_MAX, (f"{term}: the check misses a {scale - 1:+.0%} error "
                                      f"(|z| = {z[scale]:.2f})")
    return table


def centred_garnet(x: np.ndarray, **kwargs) -> GarnetProblem:
    """A Garnet problem whose rewards are shifted by constants so that ``V_λ`` and ``V̄`` have
    ``μ``-mean 0 at ``x``, for every context.

    With a constant continuation probability a constant shift of ``r`` (of ``r̄``) shifts
    ``Q``, ``V_λ`` (``Q̄``, ``V̄``) by constants: ``π*``, ``Ā`` and, as ``Σ_s' ∂P = 0`` and
    ``Σ ∂μ = 0``, every term of ``dJ/dx`` stay the same, while the constant part of the score
    terms' noise (``∂log P · V``) goes away.
    """
    problem = GarnetProblem(**kwargs)
    continuation = 1.0 - problem.p_end
    for _ in range(3):  # the μ-means at x of the shifted problem; converges at once
        models, solution, _ = ExactSolver(problem, tol=1e-13).solve(x)
        for c, model in enumerate(models):
            pi = solution.pi[c]
            v_soft = evaluate_policy(model, pi, lam=problem.lam)
            v_bar = evaluate_policy(model, pi, reward=model.r_leader, gamma=model.leader_gamma)
            problem.R0[c] -= model.mu @ v_soft * (1 - problem.gamma * continuation)
            problem.L0[c] -= model.mu @ v_bar * (1 - problem.leader_gamma * continuation)
    return problem


def exact_terms(model, pi: np.ndarray, lam: float) -> dict[str, np.ndarray]:
    """term -> its exact value: :func:`hypergradient_terms` summed over the derivative kinds."""
    out = {term: 0.0 for term in TERMS}
    for (term, _), value in hypergradient_terms(model, pi, lam).items():
        out[term] = out[term] + value
    return out
