"""What one tax-design run is: the follower set-ups, their budgets and the spec.

Six follower set-ups (:data:`SETUPS`, chosen by name; each names its follower, so any
registered follower can be swapped in):

* ``"neural"`` — continuous assets, the paper's soft-DQN households (``"soft_dqn"``, one Q
  output per flat action), warm-started across leader steps with a reduced budget, ``n_envs``
  vectorised copies of the household env; HPGD uses the leave-one-out every-visit batch
  estimator (``every_visit_loo``) on asset cells.
* ``"neural_joint"`` — the same with the joint-action Q head (``policy="JointMlpPolicy"``,
  :mod:`bilevel_envs.followers.joint_q`): actions embedded by their hours and consumption.
* ``"neural_grid"`` — soft-DQN households (joint-action head, one free embedding per asset
  cell) trained on the 41-cell grid economy itself, the economy their gap is measured on.
* ``"neural_afterstate"`` — soft-DQN households on the grid
  economy that know their utility and their savings equation and learn the value of their
  savings (``policy="AfterstateMlpPolicy"``, :mod:`bilevel_envs.followers.afterstate_q`).

The neural set-ups measure their households' soft-optimality gap on the 41-cell grid economy
at every leader step (``follower_quality``, :mod:`bilevel_envs.follower_quality`).
* ``"tabular"`` — the asset-gridded variant with exact soft-optimal households (``"soft_vi"``):
  the same algorithms, in minutes, with the exact welfare ``J(x)`` at every evaluated iterate.
* ``"grid"`` — continuous assets with the exact policy of the gridded economy
  (``"grid_soft_vi"``): a cheap continuous-asset check of the estimator.

:data:`PAPER_BUDGET` is the authors' full budget (3 M follower transitions per leader step,
1,000 iterations) as a configuration. Deviations from the authors' code (docs/reference.md §5
and §7.15–21) and why: ``docs/tax_design.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from bilevel_bench.checks import (
    Boolean,
    Choice,
    Integer,
    JSONObject,
    Nullable,
    Positive,
    SpecError,
    Text,
)
from bilevel_bench.specs import Spec, spec_field

ENV_ID = "bilevel/TaxDesign-v0"
ALGORITHMS = ("hpgd", "zero_order")
MAX_ITERATIONS = 10**6

#: The soft-DQN households of the default neural set-up: warm-started, 16 vectorised envs.
#: Chosen on this machine (docs/tax_design.md): 50,000 cold transitions per preference group,
#: then 3,000 per leader step; batch 512 every 16 transitions, Adam 5e-4, MSE loss as the authors.
NEURAL_FOLLOWER: dict[str, Any] = {
    "warmup_timesteps": 50_000, "total_timesteps": 3_000, "n_envs": 16,
    "algo_kwargs": {"learning_rate": 5e-4, "buffer_size": 20_000, "batch_size": 512,
                    "learning_starts": 1_000, "train_freq": 1, "gradient_steps": 1,
                    "target_update_interval": 500, "exploration_initial_eps": 0.1,
                    "exploration_final_eps": 0.0, "exploration_fraction": 0.05, "loss": "mse"},
}
#: The soft-DQN households with the joint-action Q head ``Q(s, a) = φ(s)·ψ(hours, c_1..c_M)``
#: (:mod:`bilevel_envs.followers.joint_q`): the transitions of :data:`NEURAL_FOLLOWER` (50,000
#: cold per preference group, then 3,000 per leader step); one gradient step (batch 256, Huber
#: loss) every 4 transitions; assets scaled by 1/20. It does not reproduce the paper's taxes at
#: this budget (docs/tax_design.md, "Neural households measured exactly").
JOINT_POLICY_KWARGS: dict[str, Any] = {"net_arch": [64, 64], "action_arch": [64], "rank": 32,
                                       "obs_scale": 0.05}
NEURAL_JOINT_FOLLOWER: dict[str, Any] = {
    "warmup_timesteps": 50_000, "total_timesteps": 3_000, "n_envs": 16,
    "policy": "JointMlpPolicy",
    "algo_kwargs": {"learning_rate": 5e-4, "buffer_size": 50_000, "batch_size": 256,
                    "learning_starts": 1_000, "train_freq": 1, "gradient_steps": 4,
                    "target_update_interval": 500, "exploration_initial_eps": 0.1,
                    "exploration_final_eps": 0.0, "exploration_fraction": 0.05, "loss": "huber",
                    "policy_kwargs": JOINT_POLICY_KWARGS},
}
#: Soft-DQN households on the 41-cell grid economy itself (``tabular=True``: ``Discrete(41)``
#: observations, one-hot encoded by SB3), the economy their soft-optimality gap is measured on.
#: The joint-action head with a free embedding per asset cell (``net_arch=[]``), a per-cell value
#: ``v(s)``, actions embedded by their values and one-hot levels, Q scaled by 100; training
#: episodes cut to 20 steps, each from a random asset cell (exploring starts: data in the debt
#: cells the households rarely reach, where they otherwise overrate their actions); target copy
#: every 100 transitions.
#: 150,000 cold transitions per preference group, then 10,000 per leader step, the step size
#: falling linearly from 1e-3 to 5e-5 over the 350,000 transitions a group gets in a 40-step run
#: (docs/tax_design.md, "Neural households measured exactly" and "The tax result with neural
#: households"). The leader samples 300 households per step, as with exact households, so
#: that the two set-ups differ only in their followers.
GRID_POLICY_KWARGS: dict[str, Any] = {"net_arch": [], "action_arch": [64, 64], "rank": 32,
                                      "q_scale": 100.0, "state_value": True,
                                      "action_features": "values+onehot"}
NEURAL_GRID_FOLLOWER: dict[str, Any] = {
    **NEURAL_JOINT_FOLLOWER, "warmup_timesteps": 150_000, "total_timesteps": 10_000,
    "episode_steps": 20, "exploring_starts": True,
    "algo_kwargs": {**NEURAL_JOINT_FOLLOWER["algo_kwargs"], "learning_rate": 1e-3,
                    "lr_decay": {"kind": "linear", "timesteps": 350_000, "final": 0.05},
                    "target_update_interval": 100, "loss": "mse",
                    "policy_kwargs": GRID_POLICY_KWARGS},
}
#: Soft-DQN households that know their utility and their savings equation: the afterstate
#: Q-network ``Q(s, a) = r(s, a) + γ W(m(s, a))`` (:mod:`bilevel_envs.followers.afterstate_q`)
#: learns only ``W``, the value of the savings ``m`` carried into the next period, an MLP
#: ``[64, 64]`` scaled by 100. Otherwise the ``neural_grid`` households' training (150,000 cold
#: transitions per group, then 10,000 per leader step, exploring starts, 20-step episodes),
#: with the step size 3e-4 falling linearly to 5 % over 350,000 transitions
#: (docs/tax_design.md, "Households that know their savings").
AFTERSTATE_POLICY_KWARGS: dict[str, Any] = {"net_arch": [64, 64], "value_scale": 100.0}
NEURAL_AFTERSTATE_FOLLOWER: dict[str, Any] = {
    **NEURAL_GRID_FOLLOWER, "policy": "AfterstateMlpPolicy",
    "algo_kwargs": {**NEURAL_GRID_FOLLOWER["algo_kwargs"], "learning_rate": 3e-4,
                    "policy_kwargs": AFTERSTATE_POLICY_KWARGS},
}
#: The authors' follower budget (docs/reference.md §5.2): 3 M transitions per solve (10 envs),
#: replay 10,000, batch 1,000 every 10 transitions, target copy every 5,000, Adam 5e-5 clipped
#: at 1.0, ε 1 → 0.1 over the first third. (Warm-started here; they restarted from scratch.)
PAPER_FOLLOWER: dict[str, Any] = {
    "warmup_timesteps": 3_000_000, "total_timesteps": 3_000_000, "n_envs": 10,
    "algo_kwargs": {"learning_rate": 5e-5, "buffer_size": 10_000, "batch_size": 1_000,
                    "learning_starts": 10_000, "train_freq": 1, "gradient_steps": 1,
                    "target_update_interval": 5_000, "max_grad_norm": 1.0,
                    "exploration_initial_eps": 1.0, "exploration_final_eps": 0.1,
                    "exploration_fraction": 1 / 3, "loss": "mse"},
}

#: Follower set-ups: the env arguments that differ between them, and the iterations per
#: algorithm (zero-order asks the followers twice per iteration: with the neural followers it
#: gets half the iterations, the same follower budget).
SETUPS: dict[str, dict[str, Any]] = {
    "neural": {"tabular": False, "follower": "soft_dqn", "follower_kwargs": NEURAL_FOLLOWER,
               "n_envs": 100, "follower_quality": True,
               "iterations": {"hpgd": 40, "zero_order": 20}},
    "neural_joint": {"tabular": False, "follower": "soft_dqn",
                     "follower_kwargs": NEURAL_JOINT_FOLLOWER, "n_envs": 100,
                     "follower_quality": True,
                     "iterations": {"hpgd": 40, "zero_order": 20}},
    "neural_grid": {"tabular": True, "follower": "soft_dqn",
                    "follower_kwargs": NEURAL_GRID_FOLLOWER, "n_envs": 300,
                    "follower_quality": True, "iterations": {"hpgd": 40, "zero_order": 20}},
    "neural_afterstate": {"tabular": True, "follower": "soft_dqn",
                          "follower_kwargs": NEURAL_AFTERSTATE_FOLLOWER, "n_envs": 300,
                          "follower_quality": True,
                          "iterations": {"hpgd": 40, "zero_order": 20}},
    "tabular": {"tabular": True, "follower": "soft_vi", "follower_kwargs": {},
                "n_envs": 300, "iterations": {"hpgd": 100, "zero_order": 100}},
    "grid": {"tabular": False, "follower": "grid_soft_vi", "follower_kwargs": {},
             "n_envs": 300, "iterations": {"hpgd": 100, "zero_order": 100}},
}
#: ``--quick``: fewer iterations, and a small soft-DQN budget (a plumbing check for that set-up).
QUICK: dict[str, dict[str, Any]] = {
    "neural": {"iterations": {"hpgd": 8, "zero_order": 4},
               "follower_kwargs": {**NEURAL_FOLLOWER, "warmup_timesteps": 10_000,
                                   "total_timesteps": 1_000}},
    "neural_joint": {"iterations": {"hpgd": 8, "zero_order": 4},
                     "follower_kwargs": {**NEURAL_JOINT_FOLLOWER, "warmup_timesteps": 10_000,
                                         "total_timesteps": 1_000}},
    "neural_grid": {"iterations": {"hpgd": 8, "zero_order": 4},
                    "follower_kwargs": {**NEURAL_GRID_FOLLOWER, "warmup_timesteps": 10_000,
                                        "total_timesteps": 1_000}},
    "neural_afterstate": {"iterations": {"hpgd": 8, "zero_order": 4},
                          "follower_kwargs": {**NEURAL_AFTERSTATE_FOLLOWER,
                                              "warmup_timesteps": 10_000,
                                              "total_timesteps": 1_000}},
    "tabular": {"iterations": {"hpgd": 40, "zero_order": 40}},
    "grid": {"iterations": {"hpgd": 40, "zero_order": 40}},
}
#: Per-algorithm settings. Learning rates and C are in natural units (tax rates), see
#: docs/tax_design.md for how they relate to the authors' logit parametrisation.
HYPERPARAMETERS: dict[str, dict[str, Any]] = {
    "hpgd": {"estimator": "every_visit_loo", "observation_cells": 41},
    "zero_order": {"perturbation_constant": 0.5},
}
#: The authors' scale: 1,000 leader iterations, 300 × 200 transitions per estimate and (for the
#: soft-DQN set-up) their follower budget — weeks per seed on this machine. The learning rate
#: 0.0025 is their first step (SGD 0.01 on the logit w, rate 2·sigmoid(w) at 0.3) in rates.
PAPER_BUDGET: dict[str, Any] = {"iterations": 1_000, "n_envs": 300, "learning_rate": 0.0025}


@dataclass(frozen=True, kw_only=True)
class TaxSpec(Spec):
    """One run of a leader on ``bilevel/TaxDesign-v0`` with one follower set-up. Build it with
    :func:`tax_spec` (the set-up's and the algorithm's settings as defaults)."""

    EXPERIMENT: ClassVar[str] = "tax"
    #: 4: zero-order's two queries start the soft-DQN households from one warm start
    VERSION: ClassVar[int] = 4

    setup: str = spec_field(check=Choice(*SETUPS), help="follower set-up")
    algorithm: str = spec_field(check=Choice(*ALGORITHMS), help="leader algorithm")
    seed: int = spec_field(check=Integer(0, 2**32 - 1), help="random seed")
    tabular: bool = spec_field(check=Boolean(), help="asset-gridded (exact) household model")
    follower: str = spec_field(check=Text(), help="registered follower name")
    follower_kwargs: dict = spec_field(check=JSONObject(), help="follower arguments")
    n_envs: int = spec_field(check=Integer(1, 10_000),
                             help="household trajectories per leader step")
    iterations: int = spec_field(check=Integer(1, MAX_ITERATIONS), flag=True,
                                 help="leader iterations per run (default: the set-up's)")
    variant: str = spec_field("code", check=Choice("code", "paper"),
                              help="household model variant")
    lam: float | None = spec_field(None, check=Nullable(Positive()),
                                   help="household entropy weight λ (None: the env's)")
    n_rollout_steps: int = spec_field(200, check=Integer(1, 10**6),
                                      help="steps per household trajectory")
    learning_rate: float = spec_field(0.02, check=Positive(), help="leader learning rate")
    perturbation_constant: float | None = spec_field(
        None, check=Positive(), algorithms=("zero_order",),
        help="zero-order perturbation constant C (radius C/t at iteration t)")
    max_grad_norm: float = spec_field(1.0, check=Positive(), help="gradient clipping norm")
    clip: str = spec_field("per_group", check=Choice("per_group", "global"),
                           help="clip the income tax and the VATs apart, or together")
    estimator: str | None = spec_field(
        None, check=Choice("paper", "every_visit", "every_visit_loo"), algorithms=("hpgd",),
        help="HPGD's estimator")
    observation_cells: int | None = spec_field(
        None, check=Nullable(Integer(2, 10_000)),
        help="HPGD on continuous assets: asset cells of the estimator's tables")
    contexts: str = spec_field("sample", check=Choice("sample", "all"),
                               help="preference groups per leader step")
    eval_every: int = spec_field(5, check=Integer(1, MAX_ITERATIONS),
                                 help="exact grid welfare every this many iterations")
    grid_cells: int = spec_field(41, check=Integer(2, 10_000),
                                 help="asset cells of the exact welfare's grid")
    follower_quality: bool = spec_field(False, check=Boolean(),
                                        help="measure the households' soft-optimality gap on "
                                             "the grid economy at every leader step")

    def check(self) -> None:
        needs_cells = self.algorithm == "hpgd" and not self.tabular
        if needs_cells and self.observation_cells is None:
            raise SpecError("observation_cells", "is required for HPGD on continuous assets")
        if not needs_cells and self.observation_cells is not None:
            raise SpecError("observation_cells", f"applies to HPGD on continuous assets only; "
                                                 f"got {self.observation_cells!r}")
        if self.n_envs * self.n_rollout_steps > 10**7:
            raise SpecError("n_rollout_steps", f"× n_envs must be <= 10,000,000 transitions "
                                               f"per step; got {self.n_envs} × "
                                               f"{self.n_rollout_steps}")


def tax_spec(setup: str, algorithm: str, seed: int, **fields: Any) -> TaxSpec:
    """The spec of one run: the set-up's settings (:data:`SETUPS`), the algorithm's
    (:data:`HYPERPARAMETERS`), then ``fields`` (``iterations`` may be a dict per algorithm).

    Raises:
        SpecError: naming the field, for an unknown set-up, algorithm or field, or a value out
            of range.
    """
    if setup not in SETUPS:
        raise SpecError("setup", f"must be one of {', '.join(map(repr, SETUPS))}; got "
                                 f"{setup!r}")
    if algorithm not in ALGORITHMS:
        raise SpecError("algorithm", f"must be one of {', '.join(map(repr, ALGORITHMS))}; got "
                                     f"{algorithm!r}")
    names = set(TaxSpec.__dataclass_fields__)
    unknown = sorted(set(fields) - names)
    if unknown:
        raise SpecError("spec", f"has no field(s) {unknown}; fields: {sorted(names)}")
    values = {**SETUPS[setup], **HYPERPARAMETERS[algorithm], **fields}
    if isinstance(values["iterations"], dict):
        values["iterations"] = values["iterations"][algorithm]
    if values["tabular"] and "observation_cells" not in fields:
        values["observation_cells"] = None  # the tabular households need no asset cells
    return TaxSpec(setup=setup, algorithm=algorithm, seed=seed, **values)
