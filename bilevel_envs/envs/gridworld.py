"""Gridworld layouts and dynamics shared by the applications (pure NumPy, no Gymnasium).

A layout is a tuple of equal-length strings; ``#`` is a wall, every other character a free cell
(letters mark special cells of an application). Free cells are numbered in row-major order.
"""

from __future__ import annotations

import numpy as np

#: The Four-Rooms layout (Sutton, Precup & Singh 1999), as used by the paper's reward-shaping
#: experiment (§5.1): 13 × 13 with walls, 104 free cells.
FOUR_ROOMS_MAP = (
    "#############",
    "#.....#.....#",
    "#.....#.....#",
    "#...........#",
    "#.....#.....#",
    "#.....#.....#",
    "##.####.....#",
    "#.....###.###",
    "#.....#.....#",
    "#.....#.....#",
    "#...........#",
    "#.....#.....#",
    "#############",
)
#: Start cell (row, column) of Four-Rooms.
FOUR_ROOMS_START = (4, 1)
#: Probability that the chosen move happens in Four-Rooms (each other direction: a third of the
#: rest), as in Sutton et al.
FOUR_ROOMS_MOVE_PROB = 2.0 / 3.0


def layout_cells(layout: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    """Free cells (everything but ``#``) in row-major order; a cell's state is its position."""
    return tuple((r, c) for r, row in enumerate(layout) for c, ch in enumerate(row) if ch != "#")


def gridworld_transitions(layout: tuple[str, ...], moves, slip: str, move_prob: float
                          ) -> np.ndarray:
    """``P[s, a, s']`` of a gridworld; moves into walls or off the map stay in place.

    ``slip="stay"``: the chosen move happens with ``move_prob``, else the agent stays.
    ``slip="uniform"``: the chosen move happens with ``move_prob``, each other move of the action
    set with ``(1 − move_prob)/(A − 1)`` (Four-Rooms).
    """
    cells = layout_cells(layout)
    index = {cell: i for i, cell in enumerate(cells)}
    S, A = len(cells), len(moves)
    target = np.array([[index.get((r + dr, c + dc), s) for dr, dc in moves]
                       for s, (r, c) in enumerate(cells)])  # (S, A)
    if slip == "stay":
        outcome = np.eye(A) * move_prob  # (action, executed move)
        stay = np.full(A, 1.0 - move_prob)
    else:
        outcome = np.full((A, A), (1.0 - move_prob) / (A - 1))
        np.fill_diagonal(outcome, move_prob)
        stay = np.zeros(A)
    P = np.zeros((S, A, S))
    rows = np.arange(S)[:, None]
    for m in range(A):
        np.add.at(P, (rows, np.arange(A)[None, :], target[:, m][:, None]), outcome[:, m][None, :])
    P[np.arange(S), :, np.arange(S)] += stay
    return P
