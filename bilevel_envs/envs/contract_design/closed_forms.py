"""Closed forms and exact optima of the contract-design ``"project"`` instance: the references
every leader is checked against (``docs/contract_design.md``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bilevel_envs.envs.contract_design.model import SUCCESS, WORK
from bilevel_envs.envs.contract_design.problem import ContractDesign
from bilevel_envs.exact import ExactSolver


def cheapest_effort_bonus(p_low: float, p_high: float, cost: float) -> float:
    """The cheapest payment on success that makes high effort a (hard) best response:
    ``c / (p_H − p_L)``, nothing on failure (incentive constraint ``p_H b − c ≥ p_L b``)."""
    if not p_high > p_low:
        raise ValueError(f"need p_high > p_low; got {p_high} and {p_low}")
    return cost / (p_high - p_low)


def _project_parts(problem: ContractDesign):
    if not isinstance(problem, ContractDesign) or problem.instance != "project":
        raise ValueError(f"the closed forms hold for the 'project' instance; got {problem!r}")
    spec = problem.spec
    p = spec.P[WORK, :, SUCCESS]
    return p, spec.costs[WORK], float(spec.revenue[WORK, SUCCESS]), spec.payment_index


def project_objective_closed_form(problem: ContractDesign, success_pay: float,
                                  failure_pay: float = 0.0) -> float:
    """``J`` of the project in closed form for the soft follower.

    With ``u = x(work→success) + γ x(success→work)`` and ``v = x(work→failure) + γ x(failure→work)``
    the outcome states carry no decision, so type ξ's soft policy in ``work`` is
    ``π(a) ∝ exp((p_a (u − v) − θ_ξ c_a)/λ)`` (the continuation is the same for every action) and
    its success probability is ``p̄_ξ = Σ_a π(a) p_a``. One period lasts two steps, hence

    ``J = Σ_ξ P(ξ) [p̄_ξ (R − u) − (1 − p̄_ξ) v] / (1 − γ²)``.

    Args:
        problem: a ``"project"`` :class:`ContractDesign`.
        success_pay: ``u``; failure_pay: ``v`` (both in discounted period-start units).
    """
    p, c, R, _ = _project_parts(problem)
    z = (np.outer(problem.cost_scales, -c) + p * (success_pay - failure_pay)) / problem.lam
    z -= z.max(axis=1, keepdims=True)
    pi = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    p_bar = pi @ p
    per_type = (p_bar * (R - success_pay) - (1 - p_bar) * failure_pay) / (1 - problem.gamma ** 2)
    return float(problem.context_probs @ per_type)


def project_hard_optimum(problem: ContractDesign) -> tuple[float, float]:
    """The principal's optimum ``(u*, J*)`` against *hard* best responses (λ → 0), exactly.

    Type ξ picks ``argmax_a p_a u − θ_ξ c_a`` (ties broken towards the higher success
    probability, the principal's preferred response). ``J`` is then piecewise
    ``p̄(u)(R − u)/(1 − γ²)`` with ``p̄`` a non-decreasing step function, so the maximum sits at
    ``u = 0`` or at a breakpoint ``θ_ξ (c_b − c_a)/(p_b − p_a)`` — for two actions and one type,
    ``c/(p_H − p_L)`` (:func:`cheapest_effort_bonus`).
    """
    p, c, R, _ = _project_parts(problem)
    candidates = {0.0}
    for theta in problem.cost_scales:
        for a in range(p.size):
            for b in range(p.size):
                if p[b] > p[a] and c[b] >= c[a]:
                    candidates.add(float(theta * (c[b] - c[a]) / (p[b] - p[a])))
    best = (-np.inf, 0.0)
    for u in sorted(u for u in candidates if u <= R):
        utility = p * u - np.outer(problem.cost_scales, c)  # (types, A)
        ties = utility >= utility.max(axis=1, keepdims=True) - 1e-12 * max(1.0, abs(u))
        p_bar = np.where(ties, p, -np.inf).max(axis=1)
        value = float(problem.context_probs @ (p_bar * (R - u))) / (1 - problem.gamma ** 2)
        if value > best[0]:
            best = (value, u)
    return best[1], best[0]


@dataclass(frozen=True)
class ProjectOptimum:
    """The exact optimum of the project instance.

    Attributes:
        success_pay: ``u*``, the optimal payment on ``work→success``.
        objective: ``J(x*)``.
        x: the optimal contract ``x*`` (``u*`` on ``work→success``, zero elsewhere).
    """

    success_pay: float
    objective: float
    x: np.ndarray


def project_optimum(problem: ContractDesign, grid_size: int = 401, xatol: float = 1e-10,
                    tol: float = 1e-12) -> ProjectOptimum:
    """The exact optimum of the ``"project"`` instance by one-dimensional search on the exact
    ``J`` (:class:`~bilevel_envs.tabular.ExactSolver`), for any λ and any set of types.

    Why one dimension suffices: ``J`` depends on ``x`` only through ``u`` and ``v`` (see
    :func:`project_objective_closed_form`), and ``J(u − v, 0) − J(u, v) = v/(1 − γ²) ≥ 0`` for
    ``u ≥ v`` while for ``v > u`` ``J(u, v) ≤ J(0, 0)`` (the success probability is non-decreasing
    in ``u − v``). So the optimum pays nothing on failure, and ``u* ∈ [0, R]`` (beyond ``R`` every
    success loses money). The search evaluates a grid on ``[0, min(R, x_max)]`` and refines the
    best point by bounded Brent search between its neighbours.

    Args:
        problem: a ``"project"`` :class:`ContractDesign`.
        grid_size: number of grid points (spacing ``R/(grid_size − 1)`` must resolve the peak,
            whose width is about ``λ/(p_H − p_L)``).
        xatol: absolute tolerance of the refinement in ``u``.
        tol: accuracy of the follower solves.
    """
    from scipy.optimize import minimize_scalar

    _, _, R, index = _project_parts(problem)
    direction = np.zeros(problem.n_params)
    direction[index[WORK, SUCCESS]] = 1.0
    solver = ExactSolver(problem, tol=tol)

    def objective(u: float) -> float:
        return solver.objective(u * direction)

    grid = np.linspace(0.0, min(R, problem.x_max), grid_size)
    values = np.array([objective(u) for u in grid])
    i = int(np.argmax(values))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, grid_size - 1)]
    result = minimize_scalar(lambda u: -objective(u), bounds=(lo, hi), method="bounded",
                             options={"xatol": xatol})
    u, value = (float(result.x), -float(result.fun)) if -result.fun > values[i] \
        else (float(grid[i]), float(values[i]))
    return ProjectOptimum(success_pay=u, objective=value, x=u * direction)
