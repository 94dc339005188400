"""What one RLHF run is: the instances, the leaders' settings and the spec.

Instances (:data:`INSTANCES`): the default 4×4 preference grid with a state-action reward model
(``grid``, ``d = 80``) and with the 3-feature model (``grid_features``), and the 3-cell ``tiny``
chain whose exact ``J`` is computed by enumerating trajectory pairs. AMD does not apply (the
objective is not a discounted sum of leader rewards).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from bilevel_bench.checks import Boolean, Choice, Integer, Positive
from bilevel_bench.specs import Spec, algorithm_spec, spec_field

ENV_ID = "bilevel/RLHF-v0"
ALGORITHMS = ("hpgd", "zero_order")
#: instance name -> RLHFProblem arguments (everything else at the env defaults: λ = 0.1, β = 1)
INSTANCES: dict[str, dict[str, Any]] = {
    "grid": {"instance": "grid"},
    "grid_features": {"instance": "grid", "reward_model": "features"},
    "tiny": {"instance": "tiny"},
}
EXACT_INSTANCES = ("tiny",)
#: Leader settings (chosen on short runs, see docs/rlhf.md). With λ = 0.1 the follower turns
#: deterministic once |r_x| differences reach ~1, every pair then ties and J sits on the plateau
#: −log 2 with zero gradient: steps must stay small.
HYPERPARAMETERS: dict[str, dict[str, Any]] = {
    "hpgd": {"learning_rate": 0.03, "max_grad_norm": 1.0, "coupled_restarts": True},
    "zero_order": {"learning_rate": 0.03, "max_grad_norm": 1.0, "perturbation_constant": 0.5},
}
MAX_ITERATIONS = 10**6


@dataclass(frozen=True, kw_only=True)
class RLHFSpec(Spec):
    """One run of a leader on an RLHF instance, its iterates scored independently of the
    leader. Build it with :func:`rlhf_spec` (the algorithm's settings as defaults)."""

    EXPERIMENT: ClassVar[str] = "rlhf"
    VERSION: ClassVar[int] = 2

    instance: str = spec_field(check=Choice(*INSTANCES), help="RLHF instance")
    algorithm: str = spec_field(check=Choice(*ALGORITHMS), help="leader algorithm")
    seed: int = spec_field(check=Integer(0, 2**32 - 1), help="random seed")
    learning_rate: float = spec_field(check=Positive(), help="leader learning rate")
    max_grad_norm: float = spec_field(check=Positive(), help="gradient clipping norm")
    coupled_restarts: bool | None = spec_field(
        None, check=Boolean(), algorithms=("hpgd",),
        help="HPGD: common random numbers for the restarts of its estimator")
    perturbation_constant: float | None = spec_field(
        None, check=Positive(), algorithms=("zero_order",),
        help="zero-order perturbation constant C (radius C/t at iteration t)")
    iterations: int = spec_field(1000, check=Integer(1, MAX_ITERATIONS), flag=True,
                                 help="leader iterations per run")
    eval_every: int = spec_field(50, check=Integer(1, MAX_ITERATIONS), flag=True,
                                 help="evaluate the iterate every this many iterations")
    n_pairs: int = spec_field(128, check=Integer(1, 10**6),
                              help="trajectory pairs per leader step")
    eval_pairs: int = spec_field(2000, check=Integer(2, 10**6), flag=True,
                                 help="fresh pairs per evaluation")


def rlhf_spec(instance: str, algorithm: str, seed: int, **fields: Any) -> RLHFSpec:
    """The spec of one run: the algorithm's :data:`HYPERPARAMETERS`, then ``fields``.

    Raises:
        SpecError: naming the field, for an unknown algorithm or field or a value out of range.
    """
    return algorithm_spec(RLHFSpec, HYPERPARAMETERS, algorithm, instance=instance, seed=seed,
                          **fields)
