"""Four-Rooms reward shaping, the pure model (paper §5.1, App. F.2): the map, slip dynamics, the
penalty parametrisation, both levels' rewards and their derivatives, and pictures of the map.

No Gymnasium here: :mod:`bilevel_envs.envs.four_rooms.problem` builds the
:class:`~bilevel_envs.BilevelProblem` on these functions, :mod:`bilevel_envs.envs.four_rooms.envs`
the follower's and the leader's Gymnasium envs. ``docs/reference.md`` records the facts behind
the choices (map, start, goals, target, slip, reward timing).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from bilevel_envs.envs.gridworld import FOUR_ROOMS_MAP, FOUR_ROOMS_MOVE_PROB, FOUR_ROOMS_START

# ---------------------------------------------------------------------------- the map
MAP = FOUR_ROOMS_MAP
UP, RIGHT, DOWN, LEFT = 0, 1, 2, 3
#: (row, col) displacement of each action.
DIRECTIONS = np.array([(-1, 0), (0, 1), (1, 0), (0, -1)])
START = FOUR_ROOMS_START
GOALS = ((1, 9), (11, 11))  # context ξ = 0 ("G1") and ξ = 1 ("G2")
TARGET = (8, 4)  # the leader's "+1" cell
PENALTY_SCALE = 0.2  # r̃ ∈ [−0.2, 0]: total penalty budget
DEFAULT_MOVE_PROB = FOUR_ROOMS_MOVE_PROB
MAX_EPISODE_STEPS = 200
X_BOUND = 30.0  # softmax logits: differences beyond ±60 are below float64 resolution anyway

#: Free cells in row-major order; the state index of a cell is its position in this tuple.
CELLS = tuple((r, c) for r, row in enumerate(MAP) for c, ch in enumerate(row) if ch == ".")
CELL_INDEX = {cell: i for i, cell in enumerate(CELLS)}
N_CELLS = len(CELLS)  # 104
N_PARAMS = N_CELLS + 1  # one logit per cell plus the "unused budget" slot
N_ACTIONS = 4
START_STATE, TARGET_STATE = CELL_INDEX[START], CELL_INDEX[TARGET]
GOAL_STATES = tuple(CELL_INDEX[g] for g in GOALS)


def _neighbour_table() -> np.ndarray:
    """``(S, 4)``: the cell reached by moving in each direction (walls: stay in place)."""
    table = np.empty((N_CELLS, N_ACTIONS), dtype=np.int64)
    for s, (r, c) in enumerate(CELLS):
        for a, (dr, dc) in enumerate(DIRECTIONS):
            table[s, a] = CELL_INDEX.get((r + dr, c + dc), s)
    return table


NEIGHBOURS = _neighbour_table()


# ---------------------------------------------------------------------------- pure model logic
def direction_probs(move_prob: float) -> np.ndarray:
    """``(4, 4)``: probability of moving in direction ``j`` when choosing action ``i``."""
    other = (1.0 - move_prob) / 3.0
    return np.full((N_ACTIONS, N_ACTIONS), other) + (move_prob - other) * np.eye(N_ACTIONS)


@lru_cache(maxsize=16)
def transition_tensor(move_prob: float, goal_state: int) -> np.ndarray:
    """``P[s, a, s']`` with slip ``move_prob``; the active goal's row is zero (terminal)."""
    P = np.zeros((N_CELLS, N_ACTIONS, N_CELLS))
    probs = direction_probs(move_prob)
    for direction in range(N_ACTIONS):
        np.add.at(P, (np.arange(N_CELLS)[:, None], np.arange(N_ACTIONS)[None, :],
                      NEIGHBOURS[:, direction][:, None]), probs[:, direction][None, :])
    P[goal_state] = 0.0
    P.setflags(write=False)
    return P


def softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max())
    return z / z.sum()


def penalties(sigma: np.ndarray) -> np.ndarray:
    """Cell penalties ``r̃ = −0.2 · softmax(x)[:104]`` from ``sigma = softmax(x)``."""
    return -PENALTY_SCALE * sigma[:N_CELLS]


def penalty_jacobian(sigma: np.ndarray) -> np.ndarray:
    """``(104, 105)``: ``∂r̃_c/∂x_j = −0.2 σ_c (δ_cj − σ_j)``."""
    jac = np.outer(sigma[:N_CELLS], sigma)
    jac[np.arange(N_CELLS), np.arange(N_CELLS)] -= sigma[:N_CELLS]
    return PENALTY_SCALE * jac


def total_penalty_grad(sigma: np.ndarray) -> np.ndarray:
    """``∂/∂x Σ_c |r̃_c| = ∂/∂x 0.2 (1 − σ_105) = −0.2 σ_105 (e_105 − σ)``."""
    g = PENALTY_SCALE * sigma[-1] * sigma
    g[-1] -= PENALTY_SCALE * sigma[-1]
    return g


def follower_state_reward(sigma: np.ndarray, goal_state: int) -> np.ndarray:
    """``r(s)``: 1 on the active goal (the step taken from it), the cell penalty elsewhere."""
    r = penalties(sigma).copy()
    r[goal_state] = 1.0
    return r


def leader_state_reward(sigma: np.ndarray, goal_state: int, beta: float) -> np.ndarray:
    """``r̄(s) = 1{s = target} − β 1{s = goal} Σ_c |r̃_c|`` (cost paid once, from the goal)."""
    r = np.zeros(N_CELLS)
    r[TARGET_STATE] += 1.0
    r[goal_state] -= beta * PENALTY_SCALE * (1.0 - sigma[-1])
    return r


def render_text(agent: int, goal: int) -> str:
    """The map as text: ``A`` agent, ``G`` active goal, ``+`` target."""
    grid = [list(row) for row in MAP]
    for state, ch in ((TARGET_STATE, "+"), (goal, "G"), (agent, "A")):
        r, c = CELLS[state]
        grid[r][c] = ch
    return "\n".join("".join(row) for row in grid) + "\n"


def render_rgb(agent: int, goal: int, penalty: np.ndarray, scale: int = 16) -> np.ndarray:
    """An RGB image: walls dark, cells shaded red by penalty, goal green, target blue, agent
    gold."""
    img = np.full((len(MAP), len(MAP[0]), 3), 40, dtype=np.uint8)
    strength = np.abs(penalty) / max(float(np.abs(penalty).max()), 1e-12)
    for s, (r, c) in enumerate(CELLS):
        fade = int(200 * strength[s])
        img[r, c] = (255, 255 - fade, 255 - fade)
    for state, colour in ((TARGET_STATE, (60, 90, 230)), (goal, (40, 180, 60)),
                          (agent, (230, 180, 20))):
        r, c = CELLS[state]
        img[r, c] = colour
    return np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)
