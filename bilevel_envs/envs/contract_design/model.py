"""Pure model logic of dynamic contract design: the instances (project, tree, grid) as
:class:`ContractSpec` arrays, payable transitions, payments and expected rewards.

No Gymnasium here: :mod:`bilevel_envs.envs.contract_design.problem` builds the
:class:`~bilevel_envs.BilevelProblem`, :mod:`bilevel_envs.envs.contract_design.envs` the agent's and
the principal's Gymnasium envs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bilevel_envs.validation import check_float, check_int

# ---------------------------------------------------------------------------- constants
INSTANCES = ("project", "tree", "grid")
DEFAULT_X_MAX = 5.0  # payments per transition lie in [0, 5]; every revenue below is at most 2
DEFAULT_GAMMA = 0.9
MAX_EPISODE_STEPS = 200
#: cost multipliers of the two-type option (``cost_scales=TWO_TYPES``): a diligent and a lazy agent.
TWO_TYPES = (1.0, 1.5)

# "project": one repeated work state; each period ends in a success or a failure outcome state.
WORK, SUCCESS, FAILURE = 0, 1, 2
PROJECT_EFFORT_PROBS = (0.2, 0.8)  # success probability of each effort level (low, high)
PROJECT_EFFORT_COSTS = (0.0, 0.3)  # effort cost of each level (type multiplier 1)
PROJECT_REVENUE = 2.0  # principal's revenue on work → success

# "tree": a complete binary tree; effort decides which child (good / bad) comes next.
LOW, HIGH = 0, 1
TREE_GOOD_PROBS = (0.1, 0.9)  # P(good child | low effort), P(good child | high effort)
TREE_DEPTH, TREE_MAX_DEPTH = 3, 8
TREE_GOOD_REVENUE = (0.5, 1.5)  # uniform range of the revenue on an edge into a good child
TREE_BAD_REVENUE = (0.0, 0.2)
TREE_EFFORT_COST = (0.05, 0.35)  # uniform range of the high-effort cost at each node

# "grid": walk from S to G; moves cost effort (more out of mud), resting is free.
GRID_MAP = (
    "S.~.",
    ".~..",
    "...G",
)
REST, UP, RIGHT, DOWN, LEFT = range(5)
GRID_DIRECTIONS = np.array([(0, 0), (-1, 0), (0, 1), (1, 0), (0, -1)])
GRID_MOVE_PROB = 0.8  # a move succeeds with this probability, else the agent stays
GRID_MOVE_COST, GRID_MUD_COST = 0.1, 0.3
GRID_REVENUE = 2.0  # principal's revenue on the transition into G

#: keyword arguments of each instance and their defaults.
INSTANCE_DEFAULTS: dict[str, dict[str, Any]] = {
    "project": {"effort_probs": PROJECT_EFFORT_PROBS, "effort_costs": PROJECT_EFFORT_COSTS,
                "revenue": PROJECT_REVENUE},
    "tree": {"depth": TREE_DEPTH, "seed": 0},
    "grid": {"move_prob": GRID_MOVE_PROB},
}
INSTANCE_KWARGS = frozenset(k for d in INSTANCE_DEFAULTS.values() for k in d)


# ---------------------------------------------------------------------------- the model
@dataclass(frozen=True, eq=False)
class ContractSpec:
    """Everything that defines an instance apart from ``x`` and the agent type (read-only arrays).

    Attributes:
        name: the instance name.
        P: ``(S, A, S)`` transition probabilities; each row sums to one, except terminal states,
            whose rows are zero (the step taken from them ends the episode, with no payment).
        revenue: ``(S, S)`` principal's revenue ``r(s, s')``.
        costs: ``(S, A)`` effort costs ``c(s, a)`` of a type with multiplier 1 (zero at terminal
            states).
        mu: ``(S,)`` initial-state distribution.
        payments: ``(n, 2)`` the payable transitions ``(s, s')`` — every transition some action
            can cause — in row-major order; ``x[k]`` is paid on ``payments[k]``.
        payment_index: ``(S, S)`` the inverse map, ``−1`` on transitions that cannot occur.
        state_names, action_names: labels.
    """

    name: str
    P: np.ndarray
    revenue: np.ndarray
    costs: np.ndarray
    mu: np.ndarray
    payments: np.ndarray
    payment_index: np.ndarray
    state_names: tuple[str, ...]
    action_names: tuple[str, ...]

    @property
    def n_states(self) -> int:
        return self.P.shape[0]

    @property
    def n_actions(self) -> int:
        return self.P.shape[1]

    @property
    def n_payments(self) -> int:
        return self.payments.shape[0]

    @property
    def terminal(self) -> np.ndarray:
        """``(S,)`` states whose step ends the episode."""
        return self.P.sum(axis=(1, 2)) == 0

    def payment_names(self) -> tuple[str, ...]:
        return tuple(f"{self.state_names[s]}->{self.state_names[t]}" for s, t in self.payments)


def payable_transitions(P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The transitions ``(s, s')`` with ``max_a P(s'|s, a) > 0`` (row-major) and the ``(S, S)``
    index map (``−1`` elsewhere)."""
    possible = P.max(axis=1) > 0
    pairs = np.argwhere(possible)
    index = np.full(possible.shape, -1, dtype=np.int64)
    index[pairs[:, 0], pairs[:, 1]] = np.arange(len(pairs))
    return pairs, index


def make_spec(name: str, P: np.ndarray, revenue: np.ndarray, costs: np.ndarray, mu: np.ndarray,
              state_names: tuple[str, ...], action_names: tuple[str, ...]) -> ContractSpec:
    """Validate the arrays of an instance, derive the payment index and freeze everything."""
    rows = P.sum(-1)
    if not np.all(np.isclose(rows, 1.0) | (rows == 0)) or (P < 0).any():
        raise ValueError(f"{name}: transition rows must be distributions (or zero at terminals)")
    terminal_rows = rows == 0
    if (terminal_rows.any(-1) & ~terminal_rows.all(-1)).any():
        raise ValueError(f"{name}: a state is terminal for every action or for none")
    if np.any(costs[terminal_rows.all(-1)] != 0):
        raise ValueError(f"{name}: terminal states must have zero effort cost")
    pairs, index = payable_transitions(P)
    arrays = [np.array(a, dtype=np.float64) for a in (P, revenue, costs, mu)]
    for a in arrays + [pairs, index]:
        a.setflags(write=False)
    return ContractSpec(name, *arrays, payments=pairs, payment_index=index,
                        state_names=state_names, action_names=action_names)


def project_spec(effort_probs=PROJECT_EFFORT_PROBS, effort_costs=PROJECT_EFFORT_COSTS,
                 revenue: float = PROJECT_REVENUE) -> ContractSpec:
    """The repeated project: ``work → {success, failure} → work → ...``.

    In ``work`` the agent picks an effort level ``a`` (success probability ``p_a``, cost ``c_a``);
    the outcome states have no decision (every action is free and leads back to ``work``).
    Payments: ``work→success``, ``work→failure``, ``success→work``, ``failure→work``. With one
    discount for both levels, ``J`` depends on them only through ``u = x(work→success) +
    γ x(success→work)`` and ``v = x(work→failure) + γ x(failure→work)``: the optimum is unique in
    ``J`` (and ``u``), not in ``x`` (see :func:`project_objective_closed_form`).
    """
    p = np.asarray(effort_probs, dtype=np.float64)
    c = np.asarray(effort_costs, dtype=np.float64)
    if p.ndim != 1 or p.size < 2 or c.shape != p.shape:
        raise ValueError(f"effort_probs and effort_costs must be two sequences of equal length "
                         f">= 2; got {effort_probs!r} and {effort_costs!r}")
    if not (np.all(np.isfinite(p)) and np.all((0 <= p) & (p <= 1))):
        raise ValueError(f"effort_probs must lie in [0, 1]; got {effort_probs!r}")
    if not (np.all(np.isfinite(c)) and np.all(c >= 0)):
        raise ValueError(f"effort_costs must be non-negative; got {effort_costs!r}")
    revenue = check_float("revenue", revenue, 0.0)
    A = p.size
    P = np.zeros((3, A, 3))
    P[WORK, :, SUCCESS], P[WORK, :, FAILURE] = p, 1.0 - p
    P[SUCCESS, :, WORK] = P[FAILURE, :, WORK] = 1.0
    rev = np.zeros((3, 3))
    rev[WORK, SUCCESS] = revenue
    costs = np.zeros((3, A))
    costs[WORK] = c
    actions = ("low", "high") if A == 2 else tuple(f"effort{i}" for i in range(A))
    return make_spec("project", P, rev, costs, np.eye(3)[WORK], ("work", "success", "failure"),
                     actions)


def tree_spec(depth: int = TREE_DEPTH, seed: int = 0) -> ContractSpec:
    """A complete binary effort tree of ``depth`` decisions with seeded random revenues and costs.

    Node ``i`` (heap order, root 0) has the good child ``2i + 1`` and the bad child ``2i + 2``;
    high effort reaches the good child with probability 0.9, low effort with 0.1. Revenues on
    edges into good children ~ U(0.5, 1.5), into bad children ~ U(0, 0.2); the high-effort cost of
    each node ~ U(0.05, 0.35), low effort is free. Leaves are terminal.
    """
    depth = check_int("depth", depth, 1, TREE_MAX_DEPTH)
    rng = np.random.default_rng(check_int("seed", seed, 0))
    n_internal, n_nodes = 2 ** depth - 1, 2 ** (depth + 1) - 1
    nodes = np.arange(n_internal)
    good, bad = 2 * nodes + 1, 2 * nodes + 2
    P = np.zeros((n_nodes, 2, n_nodes))
    for a in (LOW, HIGH):
        P[nodes, a, good] = TREE_GOOD_PROBS[a]
        P[nodes, a, bad] = 1.0 - TREE_GOOD_PROBS[a]
    revenue = np.zeros((n_nodes, n_nodes))
    revenue[nodes, good] = rng.uniform(*TREE_GOOD_REVENUE, size=n_internal)
    revenue[nodes, bad] = rng.uniform(*TREE_BAD_REVENUE, size=n_internal)
    costs = np.zeros((n_nodes, 2))
    costs[nodes, HIGH] = rng.uniform(*TREE_EFFORT_COST, size=n_internal)
    names = tuple(f"n{i}" for i in range(n_nodes))
    return make_spec("tree", P, revenue, costs, np.eye(n_nodes)[0], names, ("low", "high"))


GRID_CELLS = tuple((r, c) for r, row in enumerate(GRID_MAP) for c, ch in enumerate(row))


def grid_spec(move_prob: float = GRID_MOVE_PROB) -> ContractSpec:
    """The delivery grid: the agent walks from ``S`` to ``G`` (terminal); the principal earns 2 on
    the transition into ``G``. A move succeeds with ``move_prob``, else the agent stays — so the
    principal cannot tell a failed move from a rest. Moves cost 0.1 (0.3 out of mud ``~``)."""
    move_prob = check_float("move_prob", move_prob, 0.0, 1.0, low_open=True)
    index = {cell: i for i, cell in enumerate(GRID_CELLS)}
    S, A = len(GRID_CELLS), len(GRID_DIRECTIONS)
    goal = index[next(cell for cell in GRID_CELLS if GRID_MAP[cell[0]][cell[1]] == "G")]
    start = index[next(cell for cell in GRID_CELLS if GRID_MAP[cell[0]][cell[1]] == "S")]
    P, costs = np.zeros((S, A, S)), np.zeros((S, A))
    for s, (r, c) in enumerate(GRID_CELLS):
        if s == goal:
            continue
        for a, (dr, dc) in enumerate(GRID_DIRECTIONS):
            target = index.get((r + dr, c + dc), s)
            p_move = 0.0 if a == REST else move_prob
            P[s, a, target] += p_move
            P[s, a, s] += 1.0 - p_move
        costs[s, 1:] = GRID_MUD_COST if GRID_MAP[r][c] == "~" else GRID_MOVE_COST
    revenue = np.zeros((S, S))
    revenue[:, goal] = np.where(P.max(axis=1)[:, goal] > 0, GRID_REVENUE, 0.0)
    names = tuple(f"{GRID_MAP[r][c]}{(r, c)}" for r, c in GRID_CELLS)
    return make_spec("grid", P, revenue, costs, np.eye(S)[start], names,
                     ("rest", "up", "right", "down", "left"))


BUILDERS = {"project": project_spec, "tree": tree_spec, "grid": grid_spec}


def build_spec(instance: str, **instance_kwargs: Any) -> ContractSpec:
    """The :class:`ContractSpec` of a named instance; unknown names and arguments raise."""
    if instance not in BUILDERS:
        raise ValueError(f"unknown instance {instance!r}; expected one of {INSTANCES}")
    allowed = INSTANCE_DEFAULTS[instance]
    wrong = sorted(set(instance_kwargs) - set(allowed))
    if wrong:
        raise ValueError(f"argument(s) {wrong} do not apply to instance={instance!r}; its "
                         f"arguments are {sorted(allowed)}")
    return BUILDERS[instance](**{**allowed, **instance_kwargs})


def payment_matrix(spec: ContractSpec, x: np.ndarray) -> np.ndarray:
    """``(S, S)``: ``x(s, s')`` on payable transitions, 0 elsewhere."""
    X = np.zeros((spec.n_states, spec.n_states))
    X[spec.payments[:, 0], spec.payments[:, 1]] = x
    return X


def payment_jacobian(spec: ContractSpec) -> np.ndarray:
    """``(S, A, n)``: ``∂/∂x_k Σ_s' P(s'|s,a) x(s, s') = P(s'_k|s, a) 1{s = s_k}``."""
    jac = np.zeros((spec.n_states, spec.n_actions, spec.n_payments))
    k = np.arange(spec.n_payments)
    jac[spec.payments[:, 0], :, k] = spec.P[spec.payments[:, 0], :, spec.payments[:, 1]]
    return jac


def expected_rewards(spec: ContractSpec, x: np.ndarray, cost_scale: float
                     ) -> tuple[np.ndarray, np.ndarray]:
    """``(r, r̄)``, both ``(S, A)``: the agent's ``E[x(s,s')] − θ c(s,a)`` and the principal's
    ``E[r(s,s') − x(s,s')]`` over ``s' ~ P(·|s,a)``."""
    X = payment_matrix(spec, x)
    paid = np.einsum("sap,sp->sa", spec.P, X)
    earned = np.einsum("sap,sp->sa", spec.P, spec.revenue)
    return paid - cost_scale * spec.costs, earned - paid


