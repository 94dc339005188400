"""Numerical comparisons of a submission's answers with exact ones, done in the parent.

Tolerances are principled rather than tuned:

* deterministic answers: the accuracy the exact solver guarantees plus round-off
  (:func:`compare`); a failure shows the values with enough significant digits to see the
  error at the scale of the tolerance, and where the largest error is;
* Monte-Carlo answers: the mean of many i.i.d. estimates must lie within ``z`` *measured*
  standard errors of the exact value, ``z = max(4, Bonferroni quantile)`` so that a correct
  estimator fails a whole check with probability below 0.1 % however many numbers it compares;
  and the standard error must be small enough for the comparison to mean anything
  (:func:`unbiasedness`). The means and standard errors are recomputed here from the raw
  estimates the submission returned.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from bilevel_teaching.core import Outcome, failed, passed

#: family-wise false-alarm rate of one statistical check for a correct estimator
FAMILY_ALPHA = 1e-3
#: the minimum number of measured standard errors a mean may deviate by
MIN_Z = 4.0


def significant_digits(values: Sequence[float], atol: float) -> int:
    """Digits that show a difference of ``atol`` between numbers as large as ``values``
    (three more than needed), between 6 and 17."""
    scale = max([abs(float(v)) for v in values if np.isfinite(v)] + [1e-300])
    if not atol > 0 or scale <= atol:
        return 6
    return int(min(17, max(6, math.ceil(math.log10(scale / atol)) + 3)))


def compare(found: np.ndarray, expected: np.ndarray, atol: float, what: str,
            diagnoses: Mapping[str, np.ndarray] | None = None,
            diagnosis_atol: float | None = None) -> Outcome:
    """Pass if ``max |found − expected| ≤ atol``; else say where and by how much.

    ``diagnoses`` maps a hint (the likely mistake) to the answer that mistake produces; the first
    one the submission matches within ``diagnosis_atol`` (default ``atol``) is added to the
    feedback.
    """
    error = np.abs(found - expected)
    worst = int(np.argmax(error))
    if error.flat[worst] <= atol:
        return passed(f"max error {error.flat[worst]:.2e} <= {atol:.3g}")
    where = np.unravel_index(worst, found.shape) if found.ndim else ()
    index = f" at index {tuple(int(i) for i in where)}" if where else ""
    e, f = float(expected.flat[worst]), float(found.flat[worst])
    digits = significant_digits([e, f], atol)
    message = (f"{what}: max |found - expected| = {error.flat[worst]:.3g} > tolerance "
               f"{atol:.3g}{index} (expected {e:.{digits}g}, found {f:.{digits}g})")
    hint = diagnose_exact(found, diagnoses or {}, atol if diagnosis_atol is None else
                          diagnosis_atol)
    if not hint and placeholder(found):
        hint = PLACEHOLDER_HINT
    return failed(message + (f"\nHint: {hint}" if hint else ""))


PLACEHOLDER_HINT = "this is still the starter's placeholder answer: fill in the TODO"


def placeholder(found: np.ndarray) -> bool:
    """Zeros, or a uniform probability table: what the starter files return."""
    if found.size == 0:
        return False
    if np.all(found == 0):
        return True
    return found.ndim == 2 and found.shape[1] > 1 and bool(np.all(found == 1.0 / found.shape[1]))


def diagnose_exact(found: np.ndarray, diagnoses: Mapping[str, np.ndarray], atol: float) -> str:
    """The first hint whose answer ``found`` matches within ``atol`` (``""`` if none)."""
    for hint, answer in diagnoses.items():
        answer = np.asarray(answer, dtype=np.float64)
        if answer.shape == found.shape and np.max(np.abs(found - answer)) <= atol:
            return hint
    return ""


# ---------------------------------------------------------------------------- statistics
def z_threshold(n_comparisons: int, alpha: float = FAMILY_ALPHA, minimum: float = MIN_Z) -> float:
    """``max(minimum, z)`` with ``P(|N(0,1)| > z) = alpha / n_comparisons`` (Bonferroni)."""
    from scipy.stats import norm

    return max(minimum, float(norm.isf(alpha / (2 * max(n_comparisons, 1)))))


@dataclass(frozen=True)
class MeanTest:
    """The comparison of a Monte-Carlo mean with an exact value (arrays of the same shape)."""

    mean: np.ndarray
    standard_error: np.ndarray
    exact: np.ndarray
    threshold: float

    @property
    def z(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.abs(self.mean - self.exact) / self.standard_error
        exact_match = np.isclose(self.mean, self.exact, rtol=1e-12, atol=1e-12)
        return np.where(self.standard_error > 0, z, np.where(exact_match, 0.0, np.inf))

    @property
    def ok(self) -> bool:
        return bool(np.all(self.z < self.threshold))


def mean_test(samples: np.ndarray, exact: np.ndarray, n_comparisons: int | None = None
              ) -> MeanTest:
    """Sample mean and measured standard error of ``samples`` (axis 0) against ``exact``."""
    n = samples.shape[0]
    mean = samples.mean(axis=0)
    se = samples.std(axis=0, ddof=1) / math.sqrt(n) if n > 1 else np.full_like(mean, np.inf)
    comparisons = int(np.size(exact)) if n_comparisons is None else n_comparisons
    return MeanTest(mean, se, np.asarray(exact, dtype=np.float64), z_threshold(comparisons))


def unbiasedness(samples: np.ndarray, exact: np.ndarray, what: str, labels: Sequence[str],
                 targets: Mapping[str, np.ndarray] | None = None,
                 hints: Mapping[str, np.ndarray] | None = None) -> Outcome:
    """Is ``samples`` (``(n, k)`` i.i.d. estimates) unbiased for ``exact`` (``(k,)``)?

    Passes if every mean is within ``z`` measured standard errors of the exact value (see
    :func:`z_threshold`) and the test had the power to see the mistakes in ``targets``. Fails

    * if a mean is further away (the message names the first hint or target the means are
      consistent with, if any);
    * if, for some target, no number differs from the exact value by ``z + 2`` standard errors:
      had the estimator made that mistake, the test would have missed it with probability above
      2.3 %, so it is too noisy to be checked;
    * if the estimates never vary (an estimator built from sampled trajectories is random).

    Args:
        samples: ``(n, k)`` estimates.
        exact: ``(k,)`` exact values.
        what: what is estimated (for messages).
        labels: a name for each of the ``k`` numbers (e.g. ``"dQ(s=2, a=1)[x_3]"``).
        targets: hint → the exact value a known mistake would estimate; the check must be able
            to tell each of them from the right answer.
        hints: more such diagnoses, reported when consistent but not required to be detectable.
    """
    targets, hints = dict(targets or {}), dict(hints or {})
    test = mean_test(samples, exact)
    if np.all(samples.std(axis=0) == 0) and samples.shape[0] > 1 and np.any(exact != 0):
        if np.all(samples == 0):
            return failed(f"{what}: all {samples.shape[0]} estimates are 0; {PLACEHOLDER_HINT}.")
        return failed(f"{what}: all {samples.shape[0]} estimates are identical "
                      f"(e.g. {_vector(samples[0][:4])}); an estimate from sampled trajectories "
                      "must be random. Use the rng and the oracle you are given.")
    z = test.z
    worst = int(np.argmax(z))
    if not test.ok:
        bad = np.flatnonzero(z >= test.threshold)
        shown = ", ".join(
            f"{labels[i]}: mean {test.mean[i]:.4g} +- {test.standard_error[i]:.2g} (s.e.) vs "
            f"exact {test.exact[i]:.4g}, {min(z[i], 1e9):.1f} s.e. off" for i in bad[:3])
        more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
        message = (f"{what} is biased: {len(bad)} of {len(z)} means are more than "
                   f"{test.threshold:.2f} standard errors from the exact value ({samples.shape[0]}"
                   f" estimates each). {shown}{more}.")
        mistake = diagnose_statistical(test, {**targets, **hints})
        if mistake:
            message += f"\nHint: the means are consistent with this mistake: {mistake}"
        elif placeholder(test.mean):
            message += f"\nHint: {PLACEHOLDER_HINT}"
        return failed(message)
    for hint, answer in targets.items():
        separation = np.abs(np.asarray(answer, np.float64) - test.exact) / test.standard_error
        if not np.max(separation) >= test.threshold + 2:
            return failed(
                f"{what}: the means agree with the exact values, but your estimator is too noisy "
                f"for the check to mean anything: with {samples.shape[0]} estimates it could not "
                f"tell the right answer from this mistake: {hint} (at most "
                f"{np.max(separation):.1f} standard errors apart; {test.threshold + 2:.1f} "
                "needed). Follow the estimator of the sheet (geometric horizons, sqrt-discounted "
                "tails); do not add noise.")
    return passed(f"all {len(z)} means within {test.threshold:.2f} s.e. (worst {labels[worst]}: "
                  f"{z[worst]:.2f} s.e.)")


def diagnose_statistical(test: MeanTest, diagnoses: Mapping[str, np.ndarray]) -> str:
    """The first hint whose (exact) answer the means are consistent with."""
    for hint, answer in diagnoses.items():
        alternative = MeanTest(test.mean, test.standard_error, np.asarray(answer, np.float64),
                               test.threshold)
        if alternative.ok:
            return hint
    return ""


def _vector(values: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in np.ravel(values)) + "]"
