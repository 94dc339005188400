"""What one Table 3 run is: the spec and the constants of the paper's set-up (App. F.2).

Table 3 metric (docs/reference.md §4 and §8): per run, the mean of the exact context-averaged
``J(x_t)`` over the last ``eval_last`` pre-update iterates; per cell and algorithm, the best
learning rate (and C) of the paper's grid by mean score; mean over seeds ± standard error with
``ddof = 0``. The authors' variant (the sampled context's exact value only) is reported beside
it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from bilevel_bench.checks import Choice, Integer, Positive, Real, SpecError
from bilevel_bench.specs import Spec, spec_field

ENV_ID = "bilevel/FourRoomsShaping-v0"
ALGORITHMS = ("hpgd", "amd", "zero_order")
ENGINES = ("compiled", "leaders")
#: the paper's (λ, β) cells
TABLE3_CELLS = tuple((lam, beta) for lam in (0.001, 0.003, 0.005) for beta in (1.0, 3.0, 5.0))
LEARNING_RATES = (1.0, 0.5, 0.1, 0.05, 0.01)  # paper App. F.2.2
PERTURBATION_CONSTANTS = (0.1, 0.5, 1.0, 2.0, 5.0)  # paper App. F.2.2 (zero-order C)
MAX_ITERATIONS = 10**6
MAX_TRANSITIONS = 10**7  # HPGD's sampled transitions per gradient, n_envs × n_rollout_steps


@dataclass(frozen=True, kw_only=True)
class Table3Spec(Spec):
    """One Table 3 run: a leader on ``bilevel/FourRoomsShaping-v0`` (soft-VI followers, one
    sampled context per iteration), scored by the exact ``J`` of its last iterates. Defaults:
    the paper's set-up (App. F.2, docs/reference.md §2–3)."""

    EXPERIMENT: ClassVar[str] = "table3"
    VERSION: ClassVar[int] = 3

    algorithm: str = spec_field(check=Choice(*ALGORITHMS), help="leader algorithm")
    lam: float = spec_field(check=Positive(), help="follower entropy weight λ")
    beta: float = spec_field(check=Real(0.0), help="leader's cost β per unit of penalty")
    seed: int = spec_field(check=Integer(0, 2**32 - 1), help="random seed")
    learning_rate: float = spec_field(check=Positive(), help="leader learning rate")
    perturbation_constant: float | None = spec_field(
        None, check=Positive(), algorithms=("zero_order",),
        help="zero-order perturbation constant C (radius C/t at iteration t)")
    move_prob: float = spec_field(0.56, check=Real(0.0, 1.0),
                                  help="probability that a move goes where intended")
    iterations: int = spec_field(10_000, check=Integer(1, MAX_ITERATIONS), flag=True,
                                 help="outer iterations per run")
    n_envs: int = spec_field(5, check=Integer(1, 10_000),
                             help="HPGD: parallel follower trajectories per gradient")
    n_rollout_steps: int = spec_field(2_000, check=Integer(1, MAX_TRANSITIONS),
                                      help="HPGD: steps per trajectory")
    estimator: str = spec_field("every_visit", check=Choice("paper", "every_visit"),
                                help="HPGD's estimator")
    amd_inner: str = spec_field("exact", check=Choice("sweeps", "exact"),
                                help="AMD's inner solve")
    max_grad_norm: float = spec_field(1.0, check=Positive(), help="gradient clipping norm")
    eval_every: int = spec_field(10, check=Integer(1, MAX_ITERATIONS),
                                 help="exact evaluation every this many iterations")
    eval_last: int = spec_field(1_000, check=Integer(1, MAX_ITERATIONS),
                                help="score: mean exact J over this many last iterations")
    engine: str = spec_field(
        "compiled", check=Choice(*ENGINES), flag=True,
        help="'compiled' runs the iterations in numba, with no Python between them (the same "
             "computation, table3/compiled.py); 'leaders' runs the leaders package's HPGD, "
             "AMD, ZeroOrder")

    def check(self) -> None:
        if self.eval_last > self.iterations:
            raise SpecError("eval_last", f"must be <= iterations ({self.iterations}); got "
                                         f"{self.eval_last}")
        if self.engine == "compiled" and not (
                (self.algorithm == "hpgd" and self.estimator == "every_visit")
                or (self.algorithm == "amd" and self.amd_inner == "exact")
                or self.algorithm == "zero_order"):
            raise SpecError("engine", "'compiled' implements HPGD's every_visit estimator and "
                                      "AMD's exact inner solve; use engine='leaders' for "
                                      f"estimator={self.estimator!r}, "
                                      f"amd_inner={self.amd_inner!r}")
        if self.n_envs * self.n_rollout_steps > MAX_TRANSITIONS:
            raise SpecError("n_rollout_steps", f"× n_envs must be <= {MAX_TRANSITIONS:,} "
                                               f"transitions per gradient; got "
                                               f"{self.n_envs} × {self.n_rollout_steps}")


def cell_name(lam: float, beta: float) -> str:
    """The key of a (λ, β) cell in a selection file, e.g. ``"lambda=0.001,beta=1"``."""
    return f"lambda={lam:g},beta={beta:g}"
