"""What one contract-design run is: the instances, the leaders' settings and the spec.

Instances (:data:`INSTANCES`): the one-state ``project`` at two λ with one agent type and at one
λ with two types (exact optimum by 1-d search), the effort ``tree`` and the delivery ``grid``
(reference: the best of a few L-BFGS-B starts on the exact ``J``). Every leader starts from the
same contract, ``x0_share`` of the principal's revenue on each transition: from ``x = 0`` (no
payments) the project's ``J`` has a spurious local maximum for λ ≲ 0.07 — a small bonus does
not move a soft agent, so paying less is locally better — and any gradient method stays there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from bilevel_bench.checks import Choice, Integer, Nullable, Positive, Real
from bilevel_bench.specs import Spec, algorithm_spec, spec_field

ENV_ID = "bilevel/ContractDesign-v0"
ALGORITHMS = ("hpgd", "amd", "zero_order")
#: instance name -> ContractDesign arguments
INSTANCES: dict[str, dict[str, Any]] = {
    "project_lam0.1": {"instance": "project", "lam": 0.1, "cost_scales": [1.0]},
    "project_lam0.02": {"instance": "project", "lam": 0.02, "cost_scales": [1.0]},
    "project_2types": {"instance": "project", "lam": 0.05, "cost_scales": [1.0, 1.5]},
    "tree": {"instance": "tree", "lam": 0.05, "cost_scales": [1.0], "depth": 3, "seed": 0},
    "grid": {"instance": "grid", "lam": 0.05, "cost_scales": [1.0]},
}
#: Leader settings, shared by every instance (chosen on the project instances, see
#: docs/contract_design.md): HPGD averages the types before clipping (contexts="all"); AMD
#: samples one type per step (Alg. 9), so its per-type gradients are not clipped — clipping
#: them moves its fixed point (two types: u ≈ 0.74 instead of 0.86); zero-order queries the
#: exact value of the agents' responses (as in Table 3).
HYPERPARAMETERS: dict[str, dict[str, Any]] = {
    "hpgd": {"learning_rate": 0.01, "max_grad_norm": 1.0, "estimator": "every_visit",
             "n_envs": 5, "n_rollout_steps": 1000},
    "amd": {"learning_rate": 0.002, "max_grad_norm": None, "inner": "exact"},
    "zero_order": {"learning_rate": 0.003, "max_grad_norm": 1.0, "perturbation_constant": 1.0},
}
MAX_ITERATIONS = 10**6


@dataclass(frozen=True, kw_only=True)
class ContractSpec(Spec):
    """One run of a leader on a contract-design instance, scored by the exact ``J`` of its
    iterates. Build it with :func:`contract_spec` (the algorithm's settings as defaults)."""

    EXPERIMENT: ClassVar[str] = "contract"
    VERSION: ClassVar[int] = 2

    instance: str = spec_field(check=Choice(*INSTANCES), help="contract-design instance")
    algorithm: str = spec_field(check=Choice(*ALGORITHMS), help="leader algorithm")
    seed: int = spec_field(check=Integer(0, 2**32 - 1), help="random seed")
    learning_rate: float = spec_field(check=Positive(), help="leader learning rate")
    max_grad_norm: float | None = spec_field(check=Nullable(Positive()),
                                             help="gradient clipping norm (None: no clipping)")
    estimator: str | None = spec_field(None, check=Choice("paper", "every_visit"),
                                       algorithms=("hpgd",), help="HPGD's estimator")
    n_envs: int | None = spec_field(None, check=Integer(1, 10_000), algorithms=("hpgd",),
                                    help="HPGD: parallel agent trajectories per gradient")
    n_rollout_steps: int | None = spec_field(None, check=Integer(1, 10**6),
                                             algorithms=("hpgd",),
                                             help="HPGD: steps per trajectory")
    inner: str | None = spec_field(None, check=Choice("sweeps", "exact"), algorithms=("amd",),
                                   help="AMD's inner solve")
    perturbation_constant: float | None = spec_field(
        None, check=Positive(), algorithms=("zero_order",),
        help="zero-order perturbation constant C (radius C/t at iteration t)")
    iterations: int = spec_field(3000, check=Integer(1, MAX_ITERATIONS), flag=True,
                                 help="leader iterations per run")
    eval_every: int = spec_field(50, check=Integer(1, MAX_ITERATIONS), flag=True,
                                 help="exact evaluation every this many iterations")
    x0_share: float = spec_field(0.5, check=Real(0.0, 1.0),
                                 help="start: this share of the revenue on each transition")


def contract_spec(instance: str, algorithm: str, seed: int, **fields: Any) -> ContractSpec:
    """The spec of one run: the algorithm's :data:`HYPERPARAMETERS`, then ``fields``.

    Raises:
        SpecError: naming the field, for an unknown algorithm or field or a value out of range.
    """
    return algorithm_spec(ContractSpec, HYPERPARAMETERS, algorithm, instance=instance,
                          seed=seed, **fields)
