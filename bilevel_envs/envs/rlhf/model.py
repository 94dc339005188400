"""Pure model logic of RLHF as bilevel RL: instances, the finite-horizon
soft solver and its advantage gradient, Bradley–Terry teachers, trajectory enumeration.

No Gymnasium here: :mod:`bilevel_envs.envs.rlhf.problem` builds the problem and
:mod:`bilevel_envs.envs.rlhf.envs` the Gymnasium envs on top. Gridworld layouts and dynamics are
shared: :mod:`bilevel_envs.envs.gridworld`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bilevel_envs.envs.gridworld import FOUR_ROOMS_MAP, FOUR_ROOMS_MOVE_PROB, FOUR_ROOMS_START
from bilevel_envs.tabular import policy_entropy, soft_max_value, softmax_policy
from bilevel_envs.validation import check_float

# ---------------------------------------------------------------------------- constants
INSTANCES = ("grid", "four_rooms", "tiny")
REWARD_MODELS = ("state_action", "state", "features")
DEFAULT_X_MAX = 10.0
DEFAULT_GAMMA = 0.95
MOVE_COST = 0.05  # true per-step cost of moving (first annotator)
#: longest follower horizon H (the follower's MDP has H·S states)
MAX_TRAJECTORY_LENGTH = 1000
#: enumeration limit of the exact objective (pairs grow like its square)
MAX_ENUMERATED_TRAJECTORIES = 20_000

STAY, UP, RIGHT, DOWN, LEFT = (0, 0), (-1, 0), (0, 1), (1, 0), (0, -1)
DIRECTION_NAMES = {STAY: "stay", UP: "up", RIGHT: "right", DOWN: "down", LEFT: "left"}

#: ``S`` start, ``G`` goal (+1), ``L`` lava (−1), ``a`` an alternative goal, ``#`` wall.
GRID_MAP = (
    "S...",
    ".L.L",
    "....",
    "L..G",
)
TINY_MAP = ("aSG",)


def _four_rooms_map() -> tuple[str, ...]:
    """Four-Rooms with the start, a goal in the start room's far corner and a lava cell."""
    rows = [list(row) for row in FOUR_ROOMS_MAP]
    for (r, c), ch in ((FOUR_ROOMS_START, "S"), ((1, 5), "G"), ((3, 3), "L")):
        rows[r][c] = ch
    return tuple("".join(row) for row in rows)


@dataclass(frozen=True)
class InstanceDef:
    """A layout and its defaults: moves per action, slip model, horizon, cell values of the two
    preset annotators (cells not listed are worth 0)."""

    layout: tuple[str, ...]
    moves: tuple[tuple[int, int], ...]
    slip: str  # "stay": a failed move stays; "uniform": it goes one of the other directions
    move_prob: float
    horizon: int
    values: dict
    alt_values: dict


INSTANCE_DEFS = {
    "grid": InstanceDef(GRID_MAP, (STAY, UP, RIGHT, DOWN, LEFT), "stay", 0.9, 8,
                        {"G": 1.0, "L": -1.0}, {"G": 1.0}),
    "four_rooms": InstanceDef(_four_rooms_map(), (UP, RIGHT, DOWN, LEFT), "uniform",
                              FOUR_ROOMS_MOVE_PROB, 10, {"G": 1.0, "L": -1.0}, {"G": 1.0}),
    "tiny": InstanceDef(TINY_MAP, (LEFT, STAY, RIGHT), "stay", 0.8, 3,
                        {"G": 1.0, "a": 0.5}, {"a": 1.0}),
}


# ---------------------------------------------------------------------------- pure model logic
def soft_backward_induction(P: np.ndarray, r: np.ndarray, gamma: float, lam: float, horizon: int
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Finite-horizon soft optimum: ``Q_t = r + γ P V_{t+1}``, ``V_t = λ logΣexp(Q_t/λ)``,
    ``V_H = 0``.

    Returns ``(q (H, S, A), v (H + 1, S), pi (H, S, A))`` with ``π_t = softmax(Q_t/λ)``.
    """
    S, A = r.shape
    q, v = np.empty((horizon, S, A)), np.zeros((horizon + 1, S))
    for t in range(horizon - 1, -1, -1):
        q[t] = r + gamma * P @ v[t + 1]
        v[t] = soft_max_value(q[t], lam)
    return q, v, softmax_policy(q, lam)


def advantage_gradient(P: np.ndarray, pi: np.ndarray, dr: np.ndarray, gamma: float) -> np.ndarray:
    """``∂_x A_t(s, a)`` at the fixed policy ``pi`` (H, S, A): ``∂Q_t = ∂r + γ P ∂V_{t+1}``,
    ``∂V_t = Σ_a π_t ∂Q_t``, ``∂V_H = 0``, ``∂A_t = ∂Q_t − ∂V_t``. Shape ``(H, S, A, d)``."""
    H, S, A = pi.shape
    dA = np.empty((H, S, A, dr.shape[-1]))
    dv = np.zeros((S, dr.shape[-1]))
    flat = P.reshape(S * A, S)
    for t in range(H - 1, -1, -1):
        dq = dr + gamma * (flat @ dv).reshape(S, A, -1)
        dv = np.einsum("sa,sad->sd", pi[t], dq)
        dA[t] = dq - dv[:, None, :]
    return dA


def soft_policy_value(P: np.ndarray, pi: np.ndarray, r: np.ndarray, gamma: float, lam: float
                      ) -> np.ndarray:
    """``V_0`` (S,) of the finite-horizon policy ``pi`` (H, S, A) for ``r + λ H(π)``."""
    v = np.zeros(P.shape[0])
    for t in range(pi.shape[0] - 1, -1, -1):
        v = (pi[t] * (r + gamma * P @ v)).sum(-1) + lam * policy_entropy(pi[t])
    return v


def log_sigmoid(z: np.ndarray) -> np.ndarray:
    """``log σ(z) = −log(1 + e^{−z})``, stable for large ``|z|``."""
    return -np.logaddexp(0.0, -z)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(log_sigmoid(z))


def teacher_label_prob(g0: np.ndarray, g1: np.ndarray, beta: float, epsilon: float,
                       scale: float = 1.0) -> np.ndarray:
    """The teacher's ``P(l = 1)`` (``τ1`` preferred) from true returns ``g0, g1``:
    ``(1 − ε) σ(β (g1 − g0)/scale) + ε σ(−β (g1 − g0)/scale)`` — Bradley–Terry with rationality β,
    a label flipped with probability ε, returns divided by ``scale`` (normalisation)."""
    p = sigmoid(beta * (np.asarray(g1) - np.asarray(g0)) / scale)
    return (1.0 - epsilon) * p + epsilon * (1.0 - p)


def expected_log_likelihood(delta: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``(1 − q) log σ(−Δ) + q log σ(Δ)``: the BT log-likelihood averaged over
    ``l ~ Bernoulli(q)``."""
    return (1.0 - q) * log_sigmoid(-delta) + q * log_sigmoid(delta)


def enumerate_trajectories(P: np.ndarray, mu: np.ndarray, pi: np.ndarray,
                           max_trajectories: int = MAX_ENUMERATED_TRAJECTORIES
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every length-``H`` trajectory ``(s_0, a_0, ..., s_{H−1}, a_{H−1})`` of positive probability.

    Returns ``states (n, H)``, ``actions (n, H)`` and their probabilities ``(n,)`` under ``pi``
    (H, S, A). The support does not depend on ``pi`` as long as ``pi > 0`` (softmax policies).

    Raises:
        ValueError: if more than ``max_trajectories`` trajectories would be enumerated.
    """
    H, S, A = pi.shape
    states = np.flatnonzero(mu > 0)[:, None]
    actions = np.zeros((states.shape[0], 0), dtype=np.int64)
    logp = np.log(mu[states[:, 0]])
    for t in range(H):
        n = states.shape[0]
        if n * A > max_trajectories:
            raise ValueError(f"enumerating trajectories of horizon {H} exceeds max_trajectories="
                             f"{max_trajectories}; use instance='tiny' or a shorter "
                             "trajectory_length")
        s = np.repeat(states[:, -1], A)
        a = np.tile(np.arange(A), n)
        states, actions = np.repeat(states, A, axis=0), np.column_stack([np.repeat(actions, A, 0),
                                                                         a])
        with np.errstate(divide="ignore"):
            logp = np.repeat(logp, A) + np.log(pi[t, s, a])
        if t < H - 1:
            rows, nxt = np.nonzero(P[s, a] > 0)
            if rows.size > max_trajectories:
                raise ValueError(f"enumerating trajectories of horizon {H} exceeds "
                                 f"max_trajectories={max_trajectories}; use instance='tiny' or "
                                 "a shorter trajectory_length")
            states = np.column_stack([states[rows], nxt])
            actions = actions[rows]
            logp = logp[rows] + np.log(P[s[rows], a[rows], nxt])
    return states, actions, np.exp(logp)


# ---------------------------------------------------------------------------- data
@dataclass(frozen=True)
class Annotator:
    """A Bradley–Terry teacher (a context ξ).

    Attributes:
        reward: ``(S, A)`` true reward.
        beta: rationality β ≥ 0 (0: random labels).
        epsilon: probability in [0, 0.5] that a label is flipped.
        name: the context's name.
    """

    reward: np.ndarray
    beta: float = 1.0
    epsilon: float = 0.0
    name: str = "annotator"


@dataclass(frozen=True)
class TrajectoryBatch:
    """``N`` trajectories of horizon ``H``: base-state indices ``states (N, H)`` and
    ``actions (N, H)`` (time is the column index; the follower env observes ``t·S + state``)."""

    states: np.ndarray
    actions: np.ndarray

    def __len__(self) -> int:
        return self.states.shape[0]

    def __getitem__(self, item) -> TrajectoryBatch:
        return TrajectoryBatch(self.states[item], self.actions[item])

    def discounted_sum(self, table: np.ndarray, gamma: float) -> np.ndarray:
        """``Σ_t γ^t table[s_t, a_t]`` for a table ``(S, A, ...)``: shape ``(N, ...)``."""
        values = table[self.states, self.actions]  # (N, H, ...)
        weights = gamma ** np.arange(self.states.shape[1])
        return np.tensordot(weights, values, axes=(0, 1))

    def discounted_visits(self, n_states: int, n_actions: int, gamma: float,
                          weights: np.ndarray | None = None) -> np.ndarray:
        """``Σ_n w_n Σ_t γ^t 1{(s_t, a_t) = (s, a)}``, shape ``(S, A)`` (``w = 1`` by default)."""
        w = np.ones(len(self)) if weights is None else np.asarray(weights, dtype=np.float64)
        values = w[:, None] * gamma ** np.arange(self.states.shape[1])
        index = self.states * n_actions + self.actions
        return np.bincount(index.ravel(), weights=values.ravel(),
                           minlength=n_states * n_actions).reshape(n_states, n_actions)




# ---------------------------------------------------------------------------- problem construction
def cell_reward(values: dict, cell_chars: np.ndarray, moves, move_cost: float) -> np.ndarray:
    """``(S, A)`` reward: the value of each cell's character (0 if unlisted) minus ``move_cost``
    for every action that moves."""
    per_cell = np.array([values.get(ch, 0.0) for ch in cell_chars])
    moving = np.array([m != STAY for m in moves], dtype=np.float64)
    return per_cell[:, None] - move_cost * moving[None, :]


def reward_features(reward_model: str, spec: InstanceDef, cell_chars: np.ndarray,
                    n_actions: int, features: np.ndarray | None = None) -> np.ndarray:
    """The features ``φ (S, A, d)`` of the reward model ``r_x = φ·x``.

    ``"state_action"``: one-hot of ``(s, a)``; ``"state"``: one-hot of ``s``; ``"features"``: the
    given ``features`` (``(S, A, d)`` or ``(S, d)``) or, if None, one-hot of the valued cell types
    of the instance plus a "moves" indicator.

    Raises:
        ValueError: for ``features`` of the wrong shape or with non-finite entries.
    """
    S, A = len(cell_chars), n_actions
    if reward_model == "state_action":
        return np.eye(S * A).reshape(S, A, S * A)
    if reward_model == "state":
        return np.broadcast_to(np.eye(S)[:, None, :], (S, A, S)).copy()
    if features is None:
        kinds = sorted(set(spec.values) | set(spec.alt_values))
        moving = np.array([m != STAY for m in spec.moves], dtype=np.float64)
        cell = (cell_chars[:, None] == np.array(kinds)[None, :]).astype(np.float64)
        return np.concatenate([np.broadcast_to(cell[:, None, :], (S, A, len(kinds))),
                               np.broadcast_to(moving[None, :, None], (S, A, 1))], axis=-1)
    phi = np.asarray(features, dtype=np.float64)
    if phi.ndim == 2 and phi.shape[0] == S:
        phi = np.broadcast_to(phi[:, None, :], (S, A, phi.shape[1]))
    if phi.ndim != 3 or phi.shape[:2] != (S, A) or not np.all(np.isfinite(phi)):
        raise ValueError(f"features must be a finite array of shape ({S}, {A}, d) or "
                         f"({S}, d); got shape {np.shape(features)}")
    return np.array(phi)


def make_annotators(annotators, spec: InstanceDef, cell_chars: np.ndarray, n_actions: int,
                    beta: float, epsilon: float) -> tuple[Annotator, ...]:
    """The annotators (contexts) of an instance: the presets ``"one"``/``"two"`` (see
    :class:`~bilevel_envs.envs.rlhf.problem.RLHFProblem`) or a validated sequence of
    :class:`Annotator`.

    Raises:
        ValueError: naming the argument, for a bad preset, rationality, mistake probability or
            annotator.
    """
    beta = check_float("beta", beta, 0.0)
    epsilon = check_float("epsilon", epsilon, 0.0, 0.5)
    if isinstance(annotators, str):
        if annotators not in ("one", "two"):
            raise ValueError(f"annotators must be 'one', 'two' or a sequence of Annotator; "
                             f"got {annotators!r}")
        first = Annotator(cell_reward(spec.values, cell_chars, spec.moves, MOVE_COST), beta,
                          epsilon, "annotator0")
        if annotators == "one":
            return (first,)
        second = Annotator(cell_reward(spec.alt_values, cell_chars, spec.moves, 0.0), beta / 2,
                           min(epsilon + 0.1, 0.5), "annotator1")
        return first, second
    out = []
    S, A = len(cell_chars), n_actions
    for i, a in enumerate(annotators):
        if not isinstance(a, Annotator):
            raise ValueError(f"annotators[{i}] must be an Annotator; got {type(a).__name__}")
        reward = np.asarray(a.reward, dtype=np.float64)
        if reward.shape == (S,):
            reward = np.broadcast_to(reward[:, None], (S, A))
        if reward.shape != (S, A) or not np.all(np.isfinite(reward)):
            raise ValueError(f"annotators[{i}].reward must be finite with shape ({S}, {A}) "
                             f"or ({S},); got shape {np.shape(a.reward)}")
        beta = check_float(f"annotators[{i}].beta", a.beta, 0.0)
        epsilon = check_float(f"annotators[{i}].epsilon", a.epsilon, 0.0, 0.5)
        out.append(Annotator(np.array(reward), beta, epsilon,
                             a.name if a.name != "annotator" else f"annotator{i}"))
    if not out:
        raise ValueError("annotators must not be empty")
    if len({a.name for a in out}) < len(out):
        raise ValueError(f"annotator names must be unique; got {[a.name for a in out]}")
    return tuple(out)


def return_scale(reward: np.ndarray, gamma: float, horizon: int) -> float:
    """``Σ_{t<H} γ^t (max r − min r)``: the spread of discounted returns a teacher normalises by
    (1 for a constant reward)."""
    spread = float(reward.max() - reward.min())
    discount = float(np.sum(gamma ** np.arange(horizon)))
    return spread * discount if spread > 0 else 1.0


# ---------------------------------------------------------------------------- rollouts and pairs
def complete_episodes(rollouts, horizon: int, n_states: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the complete length-``H`` episodes of time-augmented ``rollouts`` (a
    :class:`~bilevel_envs.rollouts.Rollouts`), in chain, then time order: ``chain (n,)`` and
    ``cols (n, H)`` (the episode's steps in its chain).

    Raises:
        ValueError: if the observations are not time-augmented states ``t·S + s``.
    """
    H, S = horizon, n_states
    T = rollouts.n_steps
    if T < H:
        return np.zeros(0, np.int64), np.zeros((0, H), np.int64)
    starts = rollouts.mask & (rollouts.episode_step == 0)
    starts[:, T - H + 1:] = False
    chain, t0 = np.nonzero(starts)
    cols = t0[:, None] + np.arange(H)
    complete = rollouts.mask[chain[:, None], cols].all(1) & rollouts.ends[chain, t0 + H - 1]
    chain, cols = chain[complete], cols[complete]
    obs = rollouts.obs[chain[:, None], cols]
    if not np.array_equal(obs // S, np.broadcast_to(np.arange(H), obs.shape)):
        raise ValueError("rollouts are not time-augmented episodes of this problem "
                         f"(observation // {S} must count 0..{H - 1})")
    return chain, cols


# ---------------------------------------------------------------------------- exact objective
def enumerated_likelihood(x: np.ndarray, traj: TrajectoryBatch, p: np.ndarray,
                          score: np.ndarray, features: np.ndarray, gamma: float,
                          annotator: Annotator, scale: float, block: int = 512
                          ) -> tuple[float, np.ndarray]:
    """One annotator's exact ``(J_ξ(x), ∇J_ξ(x))`` over every pair of enumerated trajectories.

    ``J_ξ = Σ_{i,j} p_i p_j ℓ_ξ(i, j)`` and, with ``W_ij = p_i p_j (q_ij − σ(Δ_ij))``,
    ``∇J_ξ = Σ_ij W_ij (Φ_j − Φ_i) + Σ_i p_i score_i Σ_j p_j (ℓ_ij + ℓ_ji)``.

    Args:
        x: reward-model parameters.
        traj: every trajectory of the horizon (:func:`enumerate_trajectories`) and ``p`` their
            probabilities under ``π*_x``.
        score: ``∇_x log p_x(τ)`` per trajectory, ``(n, d)``.
        features: ``φ (S, A, d)``; ``gamma``: the discount inside the horizon.
        annotator: the teacher; ``scale``: its return normalisation.
        block: rows of the pair matrices held in memory at once.
    """
    phi = traj.discounted_sum(features, gamma)  # (n, d)
    R = phi @ x
    G = traj.discounted_sum(annotator.reward, gamma)
    row_w, col_w = np.zeros(len(p)), np.zeros(len(p))  # Σ_j W_ij, Σ_i W_ij
    row_l, col_l = np.zeros(len(p)), np.zeros(len(p))  # Σ_j p_j ℓ_ij, Σ_i p_i ℓ_ij
    for start in range(0, len(p), block):
        rows = slice(start, start + block)
        delta = R[None, :] - R[rows, None]
        q = teacher_label_prob(G[rows, None], G[None, :], annotator.beta, annotator.epsilon,
                               scale)
        ell = expected_log_likelihood(delta, q)
        W = p[rows, None] * p[None, :] * (q - sigmoid(delta))
        row_w[rows] = W.sum(1)
        col_w += W.sum(0)
        row_l[rows] = ell @ p
        col_l += p[rows] @ ell
    return float(p @ row_l), (col_w - row_w) @ phi + (p * (row_l + col_l)) @ score
