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
    jac = np.multiply.outer(sigma[:N_CELLS], sigma)
    jac.ravel()[::N_PARAMS + 1] -= sigma[:N_CELLS]  # the diagonal c = j (a view: in place)
    jac *= PENALTY_SCALE
    return jac


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


def most_likely_path(pi: np.ndarray, goal: int, max_steps: int = 30) -> list[int]:
    """The states visited from the start when the follower takes the most likely action of
    ``pi`` (``(104, 4)`` action probabilities) and the move goes where intended, until ``goal`` or
    ``max_steps`` moves."""
    path = [START_STATE]
    while len(path) <= max_steps and path[-1] != goal:
        path.append(int(NEIGHBOURS[path[-1], int(np.argmax(pi[path[-1]]))]))
    return path


#: Colours of the penalty map (RGB): walls, the start, the goals G1 and G2, the leader's target.
MAP_COLOURS = {"wall": (51, 51, 51), "start": (230, 180, 20), "goal": (40, 160, 60),
               "target": (60, 90, 230)}
#: Colours of the most likely paths of the followers of G1 and G2 (black, dark violet).
PATH_COLOURS = ((0, 0, 0), (110, 30, 140))


def render_penalty_map(penalty: np.ndarray, paths: dict[int, list[int]] | None = None,
                       scale: int = 24) -> np.ndarray:
    """An RGB picture (``uint8``, ``(13·scale, 13·scale, 3)``) of the penalties and the
    followers' most likely paths, as in the docs' penalty maps.

    Cells are white (no penalty) to dark red (−0.2) on a logarithmic scale from 1e-3 (penalties
    below 1e-3 look white); walls are dark grey. Markers (a square in the cell's centre): the
    start gold, the goals G1 and G2 green, the leader's "+1" target blue. ``paths`` maps a context
    (0: G1, 1: G2) to its follower's path (:func:`most_likely_path`), drawn as a line through the
    cells' centres: solid black for G1, dashed violet for G2.
    """
    rows, cols = len(MAP), len(MAP[0])
    img = np.empty((rows, cols, 3), dtype=np.float64)
    img[:] = MAP_COLOURS["wall"]
    strength = np.clip(np.log10(np.maximum(np.abs(penalty), 1e-3) / 1e-3)
                       / np.log10(PENALTY_SCALE / 1e-3), 0.0, 1.0)
    white, dark_red = np.array([255.0, 245.0, 240.0]), np.array([103.0, 0.0, 13.0])
    for s, (r, c) in enumerate(CELLS):
        img[r, c] = white + strength[s] * (dark_red - white)
    img = np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)
    marker = scale // 3
    for cell, colour in ((START, "start"), (GOALS[0], "goal"), (GOALS[1], "goal"),
                         (TARGET, "target")):
        r0, c0 = cell[0] * scale + marker, cell[1] * scale + marker
        img[r0:r0 + scale - 2 * marker, c0:c0 + scale - 2 * marker] = MAP_COLOURS[colour]
    width = max(scale // 8, 2)
    for context, path in sorted((paths or {}).items()):
        colour, dashed = PATH_COLOURS[context % 2], context % 2 == 1
        for a, b in zip(path, path[1:]):
            (ra, ca), (rb, cb) = CELLS[a], CELLS[b]
            centre_a = (ra * scale + scale // 2, ca * scale + scale // 2)
            centre_b = (rb * scale + scale // 2, cb * scale + scale // 2)
            _segment(img, centre_a, centre_b, width, colour, dashed, scale)
    return np.round(img).astype(np.uint8)


def _segment(img: np.ndarray, a: tuple[int, int], b: tuple[int, int], width: int,
             colour: tuple[int, int, int], dashed: bool, scale: int) -> None:
    """An axis-aligned line from pixel ``a`` to ``b`` (neighbouring cells' centres)."""
    (r0, c0), (r1, c1) = sorted((a, b))
    half = width // 2
    if r0 == r1:  # horizontal
        pixels = np.arange(c0, c1 + 1)
        keep = (pixels // max(scale // 4, 1)) % 2 == 0 if dashed else np.ones(pixels.size, bool)
        img[r0 - half:r0 - half + width, pixels[keep]] = colour
    else:  # vertical
        pixels = np.arange(r0, r1 + 1)
        keep = (pixels // max(scale // 4, 1)) % 2 == 0 if dashed else np.ones(pixels.size, bool)
        img[pixels[keep], c0 - half:c0 - half + width] = colour
