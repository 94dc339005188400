"""Figure helpers shared by the experiments: matplotlib (headless), saving cropped PNGs, the
algorithms' colours and names, learning curves with a labelled uncertainty band."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from bilevel_bench.stats import curve_mean_se, trailing_mean

#: plot colour and display name of each leader algorithm (shared by every experiment)
ALGORITHM_COLOURS = {"hpgd": "tab:blue", "amd": "tab:orange", "zero_order": "tab:green"}
ALGORITHM_LABELS = {"hpgd": "HPGD", "amd": "AMD", "zero_order": "Zero-Order"}


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend.

    Raises:
        ImportError: with the install command, if matplotlib is missing.
    """
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError("plots need matplotlib: pip install 'bilevel-envs[plot]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Write ``fig`` to ``path`` as PNG (120 dpi, parent folders created), cropped to its
    content (``bbox_inches="tight"``), and close it."""
    plt = pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight", pad_inches=0.05)
    plt.close(fig)
    return path


def seeds_text(counts: Iterable[int]) -> str:
    """``"10 seeds"`` or ``"2–3 seeds"`` for the seed counts of the curves in one figure."""
    counts = sorted(set(counts))
    if not counts:
        return "0 seeds"
    n = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    return f"{n} seed{'s' if counts[-1] != 1 else ''}"


def band_label(seed_counts: Iterable[int], window: int | None = None) -> str:
    """The legend text of a shaded band: ``"band: mean ± s.e. over 10 seeds, trailing mean
    over 100 iterations"`` (no smoothing when ``window`` is ``None`` or 1)."""
    text = f"line, band: mean ± s.e. over {seeds_text(seed_counts)}"
    if window is not None and window > 1:
        text += f";\ntrailing mean over {window} iterations"
    return text


def legend_with_band(ax, band: str, **kwargs) -> None:
    """The axes' legend, with a grey swatch that explains the shaded bands."""
    from matplotlib.patches import Patch

    handles, labels = ax.get_legend_handles_labels()
    handles.append(Patch(facecolor="grey", alpha=0.25, edgecolor="none"))
    labels.append(band)
    ax.legend(handles, labels, **kwargs)


def plot_band(ax, x: np.ndarray, mean: np.ndarray, se: np.ndarray, colour: str | None,
              label: str) -> None:
    """A line at ``mean`` and a band ``mean ± se``."""
    ax.plot(x, mean, color=colour, label=label)
    ax.fill_between(x, mean - se, mean + se, color=colour, alpha=0.25, linewidth=0)


def plot_mean_curves(ax, runs_by_algorithm: dict[str, list[dict]], key: str) -> list[int]:
    """Mean ± s.e. over seeds of ``run["curve"][key]`` against ``run["curve"]["iteration"]``,
    one line per algorithm (runs of one algorithm share their evaluation iterations); returns
    the seed count of each line drawn (for :func:`band_label`)."""
    counts = []
    for algorithm, runs in runs_by_algorithm.items():
        if not runs:
            continue
        iterations = np.asarray(runs[0]["curve"]["iteration"])
        mean, se = curve_mean_se([r["curve"][key] for r in runs])
        plot_band(ax, iterations, mean, se, ALGORITHM_COLOURS.get(algorithm),
                  ALGORITHM_LABELS.get(algorithm, algorithm))
        counts.append(len(runs))
    return counts


def smoothed_mean_se(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and s.e. over seeds (axis 0) of ``values``, each a trailing mean over ``k`` points."""
    mean, se = curve_mean_se(values)
    return trailing_mean(mean, k), trailing_mean(se, k)
