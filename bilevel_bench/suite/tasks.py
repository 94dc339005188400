"""The tasks of the versioned leader benchmark ``cbrl-suite``.

A :class:`Task` fixes everything a score depends on except the leader: the registered env id and
its arguments, the start ``x_init``, how the sample track samples (rollouts per leader step), the
budget and whether ``J`` is exact. The suite (:data:`TASKS`) is frozen per
:data:`SUITE_VERSION`: changing a task's meaning means a new version, so that results stay
comparable (run records carry the version).

Budgets. A leader is stopped once what it consumed reaches the task's ``budget``:

* sample track (HPGD, zero-order, random search, any leader that only steps the env):
  ``Budget.sample_cost`` = follower-environment transitions sampled + follower training steps;
* model track (AMD, HPGD-RT-Q, leaders that read the exact model): ``Budget.model_queries``,
  the exact-model queries, against the task's ``model_budget``.

The two tracks are reported apart; their units differ, so their limits are set separately. A
model-track leader gets one exact model per iteration (AMD, HPGD-RT-Q), so ``model_budget`` is a
number of leader iterations: as many as the sample budget buys HPGD on Four Rooms and tax design
(10,000 transitions per step), twice to four times as many on contract design (AMD serves one
agent type per model, HPGD all of them per step).

Headroom. Tasks with ``headroom=True`` are ones no shipped baseline solves within the budget
(no baseline's mean score reaches 0.8 in docs/leaderboard/): the larger contract tree,
the RLHF preference grid, tax design and a Four-Rooms cell at a tenth of the budget. At these
budgets (1/50 of Table 3's 10,000 iterations) the other Four-Rooms cells are far from solved too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

SUITE_NAME = "cbrl-suite"
SUITE_VERSION = 1
APPLICATIONS = ("four_rooms", "contract", "rlhf", "tax")
TRACKS = ("sample", "model")
#: the exact-J evaluation schedule: the fractions of the budget at which the curve is scored
CURVE_FRACTIONS = tuple(k / 10 for k in range(1, 11))

FOUR_ROOMS = "bilevel/FourRoomsShaping-v0"
CONTRACT = "bilevel/ContractDesign-v0"
RLHF = "bilevel/RLHF-v0"
TAX = "bilevel/TaxDesign-v0"


def _frozen(data: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(data))


@dataclass(frozen=True)
class Task:
    """One task of the suite.

    Attributes:
        id: the task's name (``four_rooms/lam0.001_beta1``, ...).
        application: one of :data:`APPLICATIONS`.
        env_id: the registered Gymnasium id of the leader env.
        env_kwargs: the problem's arguments (``gym.make(env_id, **env_kwargs)``).
        sampling: the leader env's sampling settings on the sample track (``contexts``,
            ``n_envs``, ``n_rollout_steps``); a leader's hyperparameters may override them
            under ``"env_kwargs"``.
        budget: the sample-track limit, in ``Budget.sample_cost`` units (> 0).
        model_budget: the model-track limit, in ``Budget.model_queries`` (> 0).
        x_init: the start: ``"default"`` (the problem's ``x_init``) or ``"revenue_share:<s>"``
            (contract design: the share ``s`` of the principal's revenue on each transition).
        tabular: ``J(x)`` is computed exactly (else by a large Monte-Carlo estimate).
        headroom: a task the baselines do not solve within the budget.
        decomposable: ``J`` is a discounted sum of leader rewards (False: RLHF's trajectory-level
            log-likelihood); leaders with ``decomposable_only`` (AMD, RT-Q) are not run on the
            other tasks — they do not apply there, which is not a failure.
        description: one line for tables.
    """

    id: str
    application: str
    env_id: str
    env_kwargs: Mapping[str, Any]
    sampling: Mapping[str, Any]
    budget: int
    model_budget: int
    x_init: str = "default"
    tabular: bool = True
    headroom: bool = False
    description: str = ""
    decomposable: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "env_kwargs", _frozen(self.env_kwargs))
        object.__setattr__(self, "sampling", _frozen(self.sampling))
        if self.application not in APPLICATIONS:
            raise ValueError(f"task {self.id}: application must be one of {APPLICATIONS}; got "
                             f"{self.application!r}")
        for name in ("budget", "model_budget"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"task {self.id}: {name} must be a positive integer; got "
                                 f"{value!r}")

    def limit(self, track: str, budget_scale: float = 1.0) -> int:
        """The budget of ``track`` scaled by ``budget_scale`` (at least 1 unit)."""
        base = self.budget if track == "sample" else self.model_budget
        return max(1, int(round(base * budget_scale)))

    def to_dict(self) -> dict[str, Any]:
        """The task as plain data (for records and ``--dry-run``)."""
        return {"id": self.id, "application": self.application, "env_id": self.env_id,
                "env_kwargs": dict(self.env_kwargs), "sampling": dict(self.sampling),
                "budget": self.budget, "model_budget": self.model_budget,
                "x_init": self.x_init, "tabular": self.tabular, "headroom": self.headroom,
                "description": self.description}


# ---------------------------------------------------------------------------- version 1
_FR_SAMPLING = {"contexts": "sample", "n_envs": 5, "n_rollout_steps": 2_000}
_CONTRACT_SAMPLING = {"contexts": "all", "n_envs": 5, "n_rollout_steps": 1_000}
_TAX_SAMPLING = {"contexts": "sample", "n_envs": 50, "n_rollout_steps": 200}
_RLHF_SAMPLING: dict[str, Any] = {}  # the env's pairs per step (its defaults)
_TREE = {"instance": "tree", "lam": 0.05, "cost_scales": [1.0], "depth": 3, "seed": 0}


def _four_rooms(lam: float, beta: float, budget: int, model_budget: int,
                headroom: bool = False, suffix: str = "") -> Task:
    return Task(id=f"four_rooms/lam{lam:g}_beta{beta:g}{suffix}", application="four_rooms",
                env_id=FOUR_ROOMS, env_kwargs={"lam": lam, "beta": beta},
                sampling=_FR_SAMPLING, budget=budget, model_budget=model_budget,
                headroom=headroom,
                description=f"Four-Rooms reward shaping, λ = {lam:g}, β = {beta:g} (Table 3 "
                            f"cell){' at a tenth of the budget' if headroom else ''}")


_FR_BUDGET, _FR_MODEL = 2_000_000, 200

TASKS: tuple[Task, ...] = (
    *(_four_rooms(lam, beta, _FR_BUDGET, _FR_MODEL)
      for lam in (0.001, 0.003, 0.005) for beta in (1.0, 3.0, 5.0)),
    _four_rooms(0.001, 5.0, _FR_BUDGET // 10, _FR_MODEL // 10, headroom=True,
                suffix="_tight"),
    Task(id="contract/project_2types", application="contract", env_id=CONTRACT,
         env_kwargs={"instance": "project", "lam": 0.05, "cost_scales": [1.0, 1.5]},
         sampling=_CONTRACT_SAMPLING, budget=1_000_000, model_budget=400,
         x_init="revenue_share:0.5",
         description="one-state project, two agent types, λ = 0.05"),
    Task(id="contract/tree", application="contract", env_id=CONTRACT, env_kwargs=_TREE,
         sampling=_CONTRACT_SAMPLING, budget=1_000_000, model_budget=400,
         x_init="revenue_share:0.5", description="binary effort tree of depth 3, λ = 0.05"),
    Task(id="contract/grid", application="contract", env_id=CONTRACT,
         env_kwargs={"instance": "grid", "lam": 0.05, "cost_scales": [1.0]},
         sampling=_CONTRACT_SAMPLING, budget=1_000_000, model_budget=400,
         x_init="revenue_share:0.2",  # half the revenue is within 0.5 % of J* here
         description="delivery grid, λ = 0.05, starting at a fifth of the revenue"),
    Task(id="contract/tree_depth5", application="contract", env_id=CONTRACT,
         env_kwargs={**_TREE, "depth": 5}, sampling=_CONTRACT_SAMPLING, budget=1_000_000,
         model_budget=400, x_init="revenue_share:0.5", headroom=True,
         description="binary effort tree of depth 5 (62 payments), λ = 0.05"),
    Task(id="rlhf/tiny", application="rlhf", env_id=RLHF, env_kwargs={"instance": "tiny"},
         sampling=_RLHF_SAMPLING, budget=500_000, model_budget=400, decomposable=False,
         description="3-cell chain, exact J by enumerating trajectory pairs"),
    Task(id="rlhf/grid", application="rlhf", env_id=RLHF, env_kwargs={"instance": "grid"},
         sampling=_RLHF_SAMPLING, budget=500_000, model_budget=400, tabular=False,
         headroom=True, decomposable=False,
         description="4×4 preference grid, state-action reward model (d = 80); J by Monte "
                     "Carlo"),
    Task(id="tax/tabular", application="tax", env_id=TAX, env_kwargs={"tabular": True},
         sampling=_TAX_SAMPLING, budget=100_000, model_budget=10, headroom=True,
         description="tax design, asset-gridded households with exact soft-optimal policies"),
)
TASK_IDS: tuple[str, ...] = tuple(task.id for task in TASKS)
#: the ``--quick`` subset: one task per application
QUICK_TASK_IDS = ("four_rooms/lam0.003_beta3", "contract/tree", "rlhf/tiny", "tax/tabular")
_BY_ID = {task.id: task for task in TASKS}


def get_task(task_id: str) -> Task:
    """The task named ``task_id``.

    Raises:
        ValueError: naming the suite's task ids, for an unknown id.
    """
    if task_id not in _BY_ID:
        raise ValueError(f"unknown task {task_id!r} in {SUITE_NAME} v{SUITE_VERSION}; "
                         f"expected one of {', '.join(TASK_IDS)}")
    return _BY_ID[task_id]


def make_problem(task: Task):
    """The task's :class:`~bilevel_envs.BilevelProblem` (built through the registered id)."""
    import gymnasium as gym

    import bilevel_envs  # noqa: F401  (registers the ids)

    env = gym.make(task.env_id, **task.env_kwargs)
    return env.unwrapped.problem


def initial_x(task: Task, problem) -> Any:
    """The task's start ``x_init`` for ``problem`` (see :attr:`Task.x_init`)."""
    import numpy as np

    if task.x_init == "default":
        return np.array(problem.x_init, dtype=np.float64)
    rule, _, share = task.x_init.partition(":")
    if rule == "revenue_share":
        return problem.revenue_share(float(share))
    raise ValueError(f"task {task.id}: unknown x_init rule {task.x_init!r}")


def make_env(task: Task, track: str, env_kwargs: Mapping[str, Any] | None = None):
    """The leader env of ``task`` for ``track``.

    The sample track samples rollouts (:attr:`Task.sampling`, overridden by ``env_kwargs``);
    the model track's env returns the exact value of the followers' responses where the problem
    is tabular with a decomposable objective (no rollouts), else it samples too. The env never
    truncates: the budget, not the episode, ends a run.
    """
    import gymnasium as gym

    import bilevel_envs  # noqa: F401  (registers the ids)

    kwargs: dict[str, Any] = {**task.env_kwargs, "max_episode_steps": 10**9}
    if track == "model" and task.tabular and task.application != "rlhf":
        kwargs.update(contexts=task.sampling.get("contexts", "sample"), objective="exact",
                      n_rollout_steps=0)
    else:
        kwargs.update(task.sampling)
    kwargs.update(env_kwargs or {})
    return gym.make(task.env_id, **kwargs)
