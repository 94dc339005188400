"""The statistics of the problem checks: chi-square tests of sampled outcomes against a model's
probabilities, and z-scores of sample means against exact values.

Every test here returns a p-value (or z-scores) whose false-alarm rate is stated; the checks
split their budget over their sub-tests (Bonferroni), see :func:`bonferroni_z`.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

#: Pearson's approximation needs expected counts of about 5 per bin (Cochran's rule): smaller
#: bins of a row are pooled.
MIN_EXPECTED = 5.0


def impossible_outcomes(counts: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Indices ``(row, outcome)`` of outcomes observed although the model gives them
    probability 0 (a certain disagreement, no test needed)."""
    counts, probs = np.atleast_2d(counts), np.atleast_2d(probs)
    return np.argwhere((counts > 0) & (probs <= 0))


def merged_pearson(counts: np.ndarray, probs: np.ndarray) -> tuple[float, int]:
    """Pearson's chi-square summed over independent categorical samples, and its degrees of
    freedom.

    Row ``i`` holds the counts of ``n_i = Σ counts[i]`` draws from the distribution
    ``probs[i]`` (rows of sampled ``(s, a)`` pairs: next-state counts). In each row the bins
    with expected count below :data:`MIN_EXPECTED` are pooled into one; a pool still below it
    joins the row's smallest kept bin. A row contributes ``bins − 1`` degrees of freedom.

    Args:
        counts: ``(n_rows, K)`` or ``(K,)`` observed counts.
        probs: the same shape, each row a probability vector.
    """
    counts = np.atleast_2d(np.asarray(counts, dtype=np.float64))
    probs = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    expected = counts.sum(axis=1, keepdims=True) * probs
    keep = expected >= MIN_EXPECTED
    terms = np.where(keep, (counts - expected) ** 2 / np.where(keep, expected, 1.0), 0.0)
    rest_o = np.where(keep, 0.0, counts).sum(axis=1)
    rest_e = np.where(keep, 0.0, expected).sum(axis=1)
    n_keep = keep.sum(axis=1)
    own_bin = rest_e >= MIN_EXPECTED
    rest_term = np.where(own_bin, (rest_o - rest_e) ** 2 / np.where(own_bin, rest_e, 1.0), 0.0)
    # A small pool joins the smallest kept bin: replace that bin's term by the merged one.
    join = ~own_bin & (rest_e > 0) & (n_keep > 0)
    rows = np.flatnonzero(join)
    j = np.argmin(np.where(keep, expected, np.inf), axis=1)[rows]
    o = counts[rows, j] + rest_o[rows]
    e = expected[rows, j] + rest_e[rows]
    terms[rows, j] = (o - e) ** 2 / e
    bins = n_keep + own_bin
    return float(terms.sum() + rest_term.sum()), int(np.maximum(bins - 1, 0).sum())


def chi_square_p(counts: np.ndarray, probs: np.ndarray) -> float:
    """p-value of :func:`merged_pearson` (1.0 when there is nothing to test: a single bin).

    Raises:
        ValueError: if an outcome was observed that ``probs`` gives probability 0.
    """
    bad = impossible_outcomes(counts, probs)
    if len(bad):
        raise ValueError(f"outcome {tuple(bad[0])} (row, index) was observed but has "
                         "probability 0")
    statistic, df = merged_pearson(counts, probs)
    return float(stats.chi2.sf(statistic, df)) if df else 1.0


def pooled_mode_statistic(counts: np.ndarray, probs: np.ndarray) -> float:
    """z of the pooled count of each row's most likely outcome:
    ``(O − E) / √(Σ n p (1 − p))`` summed over rows (0 when the variance is 0).

    A per-row chi-square spreads its power over every outcome; an error in a slip probability
    moves the same mass in every row (from the intended cell to the others), which this pooled
    one-degree-of-freedom statistic accumulates.
    """
    counts = np.atleast_2d(np.asarray(counts, dtype=np.float64))
    probs = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    rows = np.arange(len(probs))
    k = np.argmax(probs, axis=1)
    n = counts.sum(axis=1)
    p = probs[rows, k]
    variance = float((n * p * (1 - p)).sum())
    if variance == 0.0:
        return 0.0
    return float((counts[rows, k].sum() - (n * p).sum()) / np.sqrt(variance))


def pooled_mode_chi_square_p(counts: np.ndarray, probs: np.ndarray) -> float:
    """Two-sided p-value of :func:`pooled_mode_statistic` (Pearson's chi-square with 1 df).

    Args:
        counts: per row (sampled pair), the outcome counts, ``(n_rows, K)`` or a list of rows.
        probs: per row, the model's probabilities.
    """
    z = pooled_mode_statistic(counts, probs)
    return float(stats.chi2.sf(z * z, df=1))


def z_scores(samples: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """z of the mean of ``samples`` ``(N, d)`` against ``exact``: one per coordinate and, last,
    along the direction of the exact value (where an error in the term's scale shows).

    ``exact`` is the exact value ``(d,)``, or ``(M, d)`` samples of a reference estimator whose
    mean is the target (a two-sample z, the standard error of both means combined).

    A coordinate whose samples do not vary has no measured standard error: it is not tested
    (z = 0; e.g. a rarely reached term that no sample reached) — the direction's z still
    covers it. If no coordinate varies, the direction's z is ±inf unless the constant estimate
    equals the target to round-off.
    """
    samples = np.asarray(samples, dtype=np.float64)
    reference = np.atleast_2d(np.asarray(exact, dtype=np.float64))
    u = reference.mean(axis=0)
    norm = np.linalg.norm(u)
    u = u / norm if norm > 0 else np.full(u.shape, 1 / np.sqrt(u.size))
    a = np.column_stack([samples, samples @ u])
    b = np.column_stack([reference, reference @ u])
    var = a.var(axis=0, ddof=1) / len(a)
    if len(b) > 1:
        var = var + b.var(axis=0, ddof=1) / len(b)
    diff = a.mean(axis=0) - b.mean(axis=0)
    scale = np.abs(a).max(axis=0) + np.abs(b).max(axis=0)
    exact_match = np.abs(diff) <= 1e-12 * np.maximum(scale, 1e-300)
    varies = var > (1e-12 * scale) ** 2 / len(a)  # not round-off of constant samples
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(varies, diff / np.sqrt(np.where(varies, var, 1.0)), 0.0)
    if not varies[-1] and not exact_match[-1]:
        z[-1] = np.sign(diff[-1]) * np.inf
    return z


def bonferroni_z(alpha: float, n_tests: int) -> float:
    """The two-sided |z| threshold of ``n_tests`` tests with a total false-alarm rate ``alpha``."""
    return float(stats.norm.isf(alpha / (2 * max(n_tests, 1))))
