"""Table 3 from run results: hyperparameter selection (and the selection file), the table
beside the paper's numbers, the timing line."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from bilevel_bench.experiments.table3.spec import ALGORITHMS, TABLE3_CELLS, cell_name
from bilevel_bench.plotting import ALGORITHM_LABELS
from bilevel_bench.stats import mean_se

SELECTION_FILE = "table3_selected.json"
#: Table 3 of the paper: (λ, β) -> algorithm -> (mean, standard error).
PAPER_TABLE3 = {
    (0.001, 1.0): {"hpgd": (0.91, 0.088), "amd": (0.58, 0.000), "zero_order": (0.59, 0.059)},
    (0.001, 3.0): {"hpgd": (0.51, 0.006), "amd": (0.51, 0.000), "zero_order": (0.50, 0.005)},
    (0.001, 5.0): {"hpgd": (0.46, 0.006), "amd": (0.46, 0.003), "zero_order": (0.46, 0.007)},
    (0.003, 1.0): {"hpgd": (0.95, 0.002), "amd": (1.00, 0.000), "zero_order": (0.91, 0.048)},
    (0.003, 3.0): {"hpgd": (0.73, 0.001), "amd": (0.39, 0.000), "zero_order": (0.40, 0.028)},
    (0.003, 5.0): {"hpgd": (0.29, 0.003), "amd": (0.32, 0.000), "zero_order": (0.32, 0.002)},
    (0.005, 1.0): {"hpgd": (1.17, 0.011), "amd": (1.28, 0.003), "zero_order": (1.15, 0.026)},
    (0.005, 3.0): {"hpgd": (1.01, 0.002), "amd": (1.13, 0.004), "zero_order": (1.02, 0.027)},
    (0.005, 5.0): {"hpgd": (0.87, 0.003), "amd": (0.97, 0.009), "zero_order": (0.79, 0.027)},
}
Selection = dict[str, dict[str, dict[str, float]]]  # cell name -> algorithm -> hyperparameters


# ---------------------------------------------------------------------------- selection
def check_selection(data: Any) -> Selection:
    """The selection in a selection file's JSON (``{"selection": {cell: {algorithm:
    {"learning_rate": lr[, "perturbation_constant": C]}}}, ...}``).

    Raises:
        ValueError: naming the entry, for anything else (unknown cells or algorithms, missing
            or extra hyperparameters, values that are not finite numbers > 0).
    """
    selection = data.get("selection") if isinstance(data, dict) else None
    if not isinstance(selection, dict):
        raise ValueError('must be a JSON object with a "selection" object')
    cells = {cell_name(lam, beta) for lam, beta in TABLE3_CELLS}
    for cell, by_algorithm in selection.items():
        if cell not in cells or not isinstance(by_algorithm, dict):
            raise ValueError(f"unknown cell {cell!r}; cells are {sorted(cells)}")
        for algorithm, chosen in by_algorithm.items():
            where = f"{cell}/{algorithm}"
            if algorithm not in ALGORITHMS:
                raise ValueError(f"{where}: unknown algorithm; expected one of {ALGORITHMS}")
            needed = {"learning_rate"} | ({"perturbation_constant"}
                                          if algorithm == "zero_order" else set())
            if not isinstance(chosen, dict) or set(chosen) != needed:
                raise ValueError(f"{where}: must give exactly {sorted(needed)}; got {chosen!r}")
            for name, value in chosen.items():
                if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                        not np.isfinite(value) or value <= 0:
                    raise ValueError(f"{where}: {name} must be a finite number > 0; got "
                                     f"{value!r}")
    return selection


def load_selection(path: str | os.PathLike | None = None) -> Selection:
    """The shipped Table 3 hyperparameter selection, or the one in ``path`` (written by
    ``--grid``).

    Raises:
        ValueError: if the file is not JSON or not a selection (see :func:`check_selection`).
        OSError: if the file cannot be read.
    """
    if path is not None:
        text = Path(path).read_text()
    else:
        text = resources.files("bilevel_bench").joinpath("data", SELECTION_FILE).read_text()
    return check_selection(json.loads(text))


def select_hyperparameters(results: list[dict]) -> Selection:
    """Best learning rate (and C) per cell and algorithm by mean score over seeds."""
    best: dict[tuple, tuple[float, tuple]] = {}
    for key, scores in _scores(results).items():
        cell_alg = key[:3]
        if cell_alg not in best or scores.mean() > best[cell_alg][0]:
            best[cell_alg] = (float(scores.mean()), key)
    selection: Selection = defaultdict(dict)
    for (lam, beta, algorithm), (_, key) in sorted(best.items()):
        chosen = {"learning_rate": key[3]}
        if key[4] is not None:
            chosen["perturbation_constant"] = key[4]
        selection[cell_name(lam, beta)][algorithm] = chosen
    return dict(selection)


def group_key(spec: dict[str, Any]) -> tuple:
    """A result's configuration: ``(λ, β, algorithm, learning rate, C or None)``."""
    return (spec["lam"], spec["beta"], spec["algorithm"], spec["learning_rate"],
            spec["perturbation_constant"])


def _scores(results: list[dict], metric: str = "score") -> dict[tuple, np.ndarray]:
    groups: dict[tuple, list[float]] = defaultdict(list)
    for r in results:
        groups[group_key(r["spec"])].append(r["metrics"][metric])
    return {k: np.asarray(v) for k, v in groups.items()}


def selected_results(results: list[dict], lam: float, beta: float, algorithm: str,
                     selection: Selection) -> list[dict]:
    """The results of the selected configuration of one cell and algorithm."""
    chosen = selection.get(cell_name(lam, beta), {}).get(algorithm)
    if chosen is None:
        return []
    key = (lam, beta, algorithm, chosen["learning_rate"], chosen.get("perturbation_constant"))
    return [r for r in results if group_key(r["spec"]) == key]


# ---------------------------------------------------------------------------- the table
def table3_rows(results: list[dict]) -> list[dict[str, Any]]:
    """One row per cell and algorithm: selected hyperparameters, mean ± s.e. (ddof=0)."""
    scores, sampled = _scores(results), _scores(results, "score_sampled_context")
    selection = select_hyperparameters(results)
    rows = []
    for lam, beta in TABLE3_CELLS:
        for algorithm in ALGORITHMS:
            chosen = selection.get(cell_name(lam, beta), {}).get(algorithm)
            if chosen is None:
                continue
            key = (lam, beta, algorithm, chosen["learning_rate"],
                   chosen.get("perturbation_constant"))
            (mean, se), (mean2, se2) = mean_se(scores[key]), mean_se(sampled[key])
            paper_mean, paper_se = PAPER_TABLE3[(lam, beta)][algorithm]
            rows.append({"lam": lam, "beta": beta, "algorithm": algorithm, "selected": chosen,
                         "n_seeds": len(scores[key]), "mean": mean, "se": se,
                         "mean_sampled_context": mean2, "se_sampled_context": se2,
                         "paper_mean": paper_mean, "paper_se": paper_se,
                         "agrees": bool(abs(mean - paper_mean)
                                        <= max(0.05, 2 * np.hypot(se, paper_se)))})
    return rows


def table3_markdown(rows: list[dict[str, Any]]) -> str:
    """The reproduced Table 3 beside the paper's numbers."""
    lines = ["| λ | β | algorithm | ours (context-averaged J) | paper | ours, authors' metric "
             "(sampled context) | selected | agrees¹ |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        chosen = ", ".join(f"{'lr' if k == 'learning_rate' else 'C'}={v:g}"
                           for k, v in r["selected"].items())
        lines.append(
            f"| {r['lam']:g} | {r['beta']:g} | {ALGORITHM_LABELS[r['algorithm']]} | "
            f"{r['mean']:.2f} ± {r['se']:.3f} | {r['paper_mean']:.2f} ± {r['paper_se']:.3f} | "
            f"{r['mean_sampled_context']:.2f} ± {r['se_sampled_context']:.3f} | {chosen} | "
            f"{'yes' if r['agrees'] else 'no'} |")
    lines.append("")
    lines.append("¹ within 0.05 or 2 combined standard errors of the paper's value. "
                 f"{rows[0]['n_seeds'] if rows else 0} seeds per cell; ± is the standard error "
                 "(ddof = 0).")
    return "\n".join(lines)


def timing_summary(results: list[dict], wall: float) -> str:
    """The invocation's wall time and the mean time per outer iteration of each algorithm."""
    per_algorithm = defaultdict(list)
    for r in results:
        per_algorithm[r["spec"]["algorithm"]].append(r["seconds"] / r["spec"]["iterations"])
    parts = ", ".join(f"{ALGORITHM_LABELS[a]} {1e3 * np.mean(v):.2f} ms"
                      for a, v in per_algorithm.items())
    return (f"Wall time of this invocation: {wall / 60:.1f} min for {len(results)} runs "
            f"(runs already on disk are not rerun). Mean time per outer iteration: {parts} "
            f"(including the exact evaluations for the metric).")
