"""``bilevel-bench suite --tune GRID.json``: a user grid searched on held-out seeds, as Table 3
selects its learning rates (``bilevel-bench table3 --grid``).

Every grid point runs on every chosen task with seeds :data:`TUNE_SEED_OFFSET`, ... (never the
evaluation seeds 0..N-1) at the task's full budget; per leader and task the point with the best
mean score wins (a point with a failed run is never chosen). The stated cost of the search is
its number of runs × the task budgets, printed before it starts and saved with the selection.

Grid file: ``{"learning_rate": [0.1, 0.01], ...}`` (every leader) or
``{"<leader>": {"learning_rate": [...]}, ...}`` (per leader, keys among ``--leader``); at most
:data:`MAX_POINTS` points per leader.
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

TUNE_SEED_OFFSET = 100
MAX_POINTS = 64
SELECTION_FILE = "tuned_hyperparameters.json"


def load_grid(path: str, leaders: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Leader -> the grid's points (kwargs dicts) from a grid file.

    Raises:
        ValueError: for a file that is not a grid (message names the problem).
        OSError: if it cannot be read.
    """
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or not data:
        raise ValueError("must be a non-empty JSON object of parameter -> list of values")
    per_leader = all(k in leaders for k in data)
    grids = {name: data[name] for name in leaders if name in data} if per_leader else \
        {name: data for name in leaders}
    points: dict[str, list[dict[str, Any]]] = {}
    for name, grid in grids.items():
        if not isinstance(grid, dict) or not grid or not all(
                isinstance(v, list) and v for v in grid.values()):
            raise ValueError(f"grid of {name}: must map each parameter to a non-empty list of "
                             f"values; got {grid!r:.100}")
        combos = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
        if len(combos) > MAX_POINTS:
            raise ValueError(f"grid of {name}: {len(combos)} points; at most {MAX_POINTS}")
        points[name] = combos
    return points


def select(results: list[dict]) -> dict[str, dict[str, dict[str, Any]]]:
    """Leader -> task -> the tuned kwargs of the grid point with the best mean score."""
    scores: dict[tuple, list[float]] = defaultdict(list)
    points: dict[tuple, dict] = {}
    for r in results:
        kwargs = r["spec"]["hyperparameters"]
        key = (r["leader"], r["task"], json.dumps(kwargs, sort_keys=True))
        ok = r["status"] == "ok" and r["score"] is not None
        scores[key].append(r["score"] if ok else -np.inf)
        points[key] = kwargs
    best: dict[tuple, tuple[float, dict]] = {}
    for key, values in scores.items():
        mean = float(np.mean(values))
        if np.isfinite(mean) and (key[:2] not in best or mean > best[key[:2]][0]):
            best[key[:2]] = (mean, points[key])
    selection: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for (leader, task), (_, kwargs) in sorted(best.items()):
        selection[leader][task] = kwargs
    return dict(selection)
