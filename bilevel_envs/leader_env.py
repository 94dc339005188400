"""`LeaderEnv`: the bilevel problem seen from the leader, as a Gymnasium env whose action is x."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

from bilevel_envs.budget import Budget, CountedSampler
from bilevel_envs.env_base import BilevelEnvBase
from bilevel_envs.follower_quality import DEFAULT_GAP_THRESHOLD, QualityMonitor
from bilevel_envs.followers import FollowerResponse, make_follower
from bilevel_envs.hypergradient import leader_values
from bilevel_envs.oracles import ORACLE_BACKENDS, make_oracle
from bilevel_envs.plain_data import to_plain_data
from bilevel_envs.problem import BilevelProblem, PairwiseObjective, TrajectoryPairs
from bilevel_envs.rollouts import Rollouts
from bilevel_envs.step_record import FollowerStep, LeaderStep
from bilevel_envs.tabular import TabularModel
from bilevel_envs.validation import check_allocation, check_choice, check_int, check_options

CONTEXT_MODES = ("sample", "all")
OBJECTIVES = ("monte_carlo", "exact")


class LeaderEnv(BilevelEnvBase):
    """A leader's view of a :class:`~bilevel_envs.BilevelProblem`.

    Each ``step(x)`` validates ``x``, lets every follower respond to ``M_{x,ξ}`` (warm-started
    from its previous response in the same context within the episode), samples rollouts of the
    followers' policies and returns an estimate of the leader objective ``J(x)`` as the reward.

    * Action space: ``problem.x_space`` (natural units; out-of-bounds ``x`` raises ``ValueError``).
    * Observation: the last ``x`` applied (zeros after ``reset``); the box is ``x_space``
      widened to contain 0.
    * Reward: ``objective="monte_carlo"``: the context-weighted
      :meth:`~bilevel_envs.BilevelProblem.estimate_objective` of each follower's rollouts — by
      default the mean discounted leader return of the episodes in the rollouts (consistent,
      ``O(1/n_episodes)`` bias from keeping only finished episodes); ``"exact"`` (tabular problems
      with a decomposable objective): the exact value of the followers' policies,
      ``Σ_ξ w_ξ μ·V̄^{π_ξ}``.
    * Episode: never terminates. The registered ids truncate after 1000 leader steps
      (``max_episode_steps`` of the registry, Gymnasium's ``TimeLimit``; change it with
      ``gym.make(id, max_episode_steps=N)``); an env constructed directly never truncates.
      A new episode (``reset``) clears the followers' warm starts.
    * Rendering: ``render_mode="ansi"``: the step counter, a summary of the last ``x``, the
      estimate of ``J`` (and its exact value where computed), the contexts served and, for envs
      that count their budget, the budget used. Subclasses may add ``"rgb_array"``.
    * Pickling: the record of the last step (:attr:`last_step`: rollouts, models, live policies)
      and warm starts that are not arrays (e.g. SB3 models with their replay buffers) are not
      pickled, so a pickled env does not grow with the steps taken; those followers restart cold
      after unpickling, as after :meth:`set_state`.
    * Info: ``"rollouts"`` (dict of ``(n_envs·n_followers, T)`` arrays, see
      :class:`~bilevel_envs.rollouts.Rollouts`), ``"contexts"`` (context index per follower),
      ``"context_weights"``, ``"objective_estimate"`` (Monte-Carlo), ``"objective_exact"``
      (with ``objective="exact"``), ``"follower_stats"`` (one dict per follower; with
      ``follower_quality`` on, also ``"soft_optimality_gap"``, ``"visited_tv"``,
      ``"soft_value_optimal"`` and ``"soft_value_follower"``, see
      :mod:`~bilevel_envs.follower_quality`), ``"budget"`` (what the step consumed,
      :meth:`~bilevel_envs.budget.Budget.as_dict`).
      Live objects (responses, policies, oracles, rollouts, models) are on the env's typed record
      of the step, :attr:`last_step` (a :class:`~bilevel_envs.step_record.LeaderStep`).
    * Budget (:mod:`bilevel_envs.budget`): :attr:`budget` totals what was consumed since
      construction (or :meth:`reset_budget`; ``reset`` does not clear it — an episode is not a
      new run). A step consumes its followers' :attr:`~bilevel_envs.followers.FollowerResponse.cost`
      and its rollouts (``followers × n_envs × n_rollout_steps`` transitions) — with
      ``objective="exact"`` also one ``model_queries`` per follower (the exact reward is
      exact-model information; the sample-based track uses Monte-Carlo rewards); the step's own
      count is ``info["budget"]`` and ``last_step.budget``. The totals also count what a leader
      consumes after the step: further rollouts through a step's oracles (they are counted
      samplers), exact models from :meth:`exact_model` and anything passed to :meth:`charge`.
      Evaluation that bypasses the env (``Leader.exact_objective``) is not counted.

    Args:
        problem: the bilevel problem.
        follower: a follower name (``"soft_vi"``, ...) or a
            :class:`~bilevel_envs.followers.Follower`.
        follower_kwargs: keyword arguments of the named follower (plain data).
        contexts: ``"sample"`` — ``n_followers`` contexts drawn from ``P_ξ`` at every step (weights
            ``1/n_followers``); ``"all"`` — one follower per context of the support, weighted by
            ``P_ξ``; or an explicit list of contexts (uniform weights).
        n_followers: followers per step in ``"sample"`` mode.
        n_envs: parallel rollout chains per follower.
        n_rollout_steps: steps per chain (episodes auto-reset); 0 disables rollouts (needs
            ``objective="exact"``).
        objective: ``"monte_carlo"`` or ``"exact"`` (see Reward).
        oracle: ``"auto"``, ``"native"``, ``"tabular"`` or ``"gym"``: how rollouts are sampled
            (see :func:`~bilevel_envs.rollouts.make_oracle`).
        follower_quality: measure each follower's policy exactly on the problem's model or
            tabular twin and warn above ``quality_threshold`` (default 0.05):
            ``None`` — tabular problems with a follower that is not exact; ``True`` — always
            (the twin's model is built each step); ``False`` — never. See
            :meth:`~bilevel_envs.follower_quality.QualityMonitor.for_env`.
        quality_threshold: the gap above which a follower is reported.
        render_mode: ``None`` or one of ``metadata["render_modes"]`` (``"ansi"``; subclasses may
            add ``"rgb_array"``); any other mode raises ``TypeError`` (see
            :func:`~bilevel_envs.env_base.check_render_mode`).
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(self, problem: BilevelProblem, follower: Any = "soft_vi",
                 follower_kwargs: dict[str, Any] | None = None,
                 contexts: str | Sequence[Any] = "sample", n_followers: int = 1, n_envs: int = 5,
                 n_rollout_steps: int = 2000, objective: str = "monte_carlo",
                 oracle: str = "auto", follower_quality: bool | None = None,
                 quality_threshold: float = DEFAULT_GAP_THRESHOLD,
                 render_mode: str | None = None):
        self.render_mode = self._check_render_mode(render_mode)
        if not isinstance(problem, BilevelProblem):
            raise TypeError(f"problem must be a BilevelProblem; got {type(problem).__name__}")
        self.problem = problem
        if follower_kwargs is not None and not isinstance(follower_kwargs, dict):
            raise ValueError(f"follower_kwargs must be a dict of keyword arguments or None; got "
                             f"{follower_kwargs!r}")
        self.follower = make_follower(follower, **(follower_kwargs or {}))
        if not self.follower.supports(problem):
            raise ValueError(f"follower {follower!r} cannot solve {problem!r}")
        self.context_mode, self.fixed_contexts = self._parse_contexts(contexts)
        for name, value, minimum in (("n_followers", n_followers, 1), ("n_envs", n_envs, 1),
                                     ("n_rollout_steps", n_rollout_steps, 0)):
            check_int(name, value, minimum)
        check_choice("objective", objective, OBJECTIVES)
        check_choice("oracle", oracle, ORACLE_BACKENDS)
        if oracle == "tabular" and not problem.is_tabular:
            raise ValueError(f"oracle='tabular' needs a tabular problem; {problem!r} has no model")
        followers_per_step = (problem.n_contexts if self.context_mode == "all" else
                              len(self.fixed_contexts) if self.context_mode == "fixed"
                              else n_followers)
        check_allocation("n_followers × n_envs × n_rollout_steps",
                         followers_per_step * n_envs * n_rollout_steps)
        if objective == "exact" and not (problem.is_tabular and problem.decomposable):
            raise ValueError("objective='exact' needs a tabular problem with a decomposable "
                             "objective (a discounted sum of leader rewards)")
        if n_rollout_steps == 0 and objective != "exact":
            raise ValueError("n_rollout_steps=0 leaves nothing to estimate J from; use "
                             "objective='exact' or n_rollout_steps >= 1")
        #: the exact measurement of the followers (None when off)
        self.quality_monitor = QualityMonitor.for_env(problem, self.follower, follower_quality,
                                                      quality_threshold)
        self.n_followers, self.n_envs = int(n_followers), int(n_envs)
        self.n_rollout_steps = int(n_rollout_steps)
        self.objective, self.oracle_backend = objective, oracle
        # A trajectory-level objective of labelled pairs: the reward is estimated from the pairs.
        self._pairwise = not problem.decomposable and isinstance(problem, PairwiseObjective)

        self.action_space = problem.x_space
        low = np.minimum(problem.x_space.low, 0.0)
        high = np.maximum(problem.x_space.high, 0.0)
        self.observation_space = spaces.Box(low, high, dtype=np.float64)

        #: the typed record of the last step (followers, responses, oracles, rollouts, models)
        self.last_step: LeaderStep | None = None
        self._warm: dict[int, Any] = {}
        self._t = 0
        self._crn_state: dict | None = None
        # Inside a common-random-numbers block: the warm starts at its start (every step's
        # starting point) and those after its first step (where the followers continue).
        self._crn_warm: dict[int, Any] | None = None
        self._crn_first_warm: dict[int, Any] | None = None
        self._budget = Budget()
        self._cost_warned = False

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        check_options(options, ())
        super().reset(seed=seed)
        self._t = 0
        self._warm = {}
        self.last_step = None
        if self.quality_monitor is not None:
            self.quality_monitor.reset()
        return np.zeros(self.observation_space.shape), {}

    def step(self, action):
        x = self.problem.check_x(action, name="action")
        if self._crn_state is not None:
            # The setter only reads the saved dict (numpy's bit generators copy it in).
            self.np_random.bit_generator.state = self._crn_state
        contexts, weights = self._step_contexts()
        # Every follower responds before any samples: the random stream's order is part of the
        # env's reproducibility.
        responses = [self._respond(x, c) for c in contexts]
        if self._crn_warm is not None and self._crn_first_warm is None:
            self._crn_first_warm = dict(self._warm)
        models = [self._model(x, c, r) for c, r in zip(contexts, responses)]
        oracles = [make_oracle(self.problem, x, c, r.policy, backend=self.oracle_backend, model=m)
                   for c, r, m in zip(contexts, responses, models)]
        parts: list[Rollouts | None] = [None] * len(contexts)
        pairs: list[TrajectoryPairs | None] = [None] * len(contexts)
        estimates = np.full(len(contexts), np.nan)
        cost = sum((self._response_cost(r) for r in responses), Budget())
        if self.n_rollout_steps:
            parts = [o.rollout(self.np_random, self.n_envs, self.n_rollout_steps)
                     for o in oracles]
            cost += Budget(transitions=sum(p.n_transitions for p in parts))
            for i, (c, rollouts) in enumerate(zip(contexts, parts)):
                if self._pairwise:
                    pairs[i] = self.problem.trajectory_pairs(rollouts)
                    estimates[i] = self.problem.pair_objective(x, c, pairs[i].traj0,
                                                               pairs[i].traj1).mean()
                else:
                    estimates[i] = self.problem.estimate_objective(x, c, rollouts,
                                                                   self.np_random)
        # Later rollouts through the step's oracles (e.g. Alg. 2 restarts) are charged too.
        followers = tuple(
            FollowerStep(context=c, weight=float(w), response=r,
                         oracle=self.counted(o), rollouts=part,
                         model=m, pairs=pair, objective_estimate=float(e))
            for c, w, r, o, part, m, pair, e in zip(contexts, weights, responses, oracles, parts,
                                                     models, pairs, estimates))
        exact = None
        if self.objective == "exact":
            exact = float(weights @ self._exact_values(followers))
            # An exact reward is exact-model information handed to the leader.
            cost += Budget(model_queries=len(followers))
        estimate = float(weights @ estimates) if self.n_rollout_steps else exact
        reward = exact if exact is not None else estimate
        quality = (None if self.quality_monitor is None
                   else self.quality_monitor.measure(x, followers))
        self.last_step = LeaderStep(x=x, followers=followers, objective_estimate=estimate,
                                    objective_exact=exact, reward=reward, budget=cost,
                                    quality=quality)
        self.charge(cost)
        self._t += 1
        return x, reward, False, False, self._info(self.last_step)

    def _info(self, step: LeaderStep) -> dict[str, Any]:
        """The step's plain-data ``info`` (the live objects stay on :attr:`last_step`)."""
        info: dict[str, Any] = {
            "contexts": step.contexts, "context_weights": step.weights.tolist(),
            "follower_stats": [dict(f.response.stats) for f in step.followers],
            "objective_estimate": step.objective_estimate, "budget": step.budget.as_dict(),
        }
        if step.objective_exact is not None:
            info["objective_exact"] = step.objective_exact
        for stats, quality in zip(info["follower_stats"], step.quality or ()):
            stats.update(quality.as_stats())
        parts = [f.rollouts for f in step.followers if f.rollouts is not None]
        info["rollouts"] = Rollouts.concatenate(parts).to_dict(copy=False) if parts else {}
        return info

    # ------------------------------------------------------------------ budget
    @property
    def budget(self) -> Budget:
        """What was consumed since construction or :meth:`reset_budget` (see Budget above)."""
        return self._budget

    def reset_budget(self) -> Budget:
        """Set :attr:`budget` to zero (a new run on the same env); returns the old totals."""
        used, self._budget = self._budget, Budget()
        return used

    def charge(self, cost: Budget) -> None:
        """Add ``cost`` to :attr:`budget`: for a leader that samples or trains followers
        outside :meth:`step` (e.g. HPGD-RT-Q's own soft Q-learning)."""
        if not isinstance(cost, Budget):
            raise TypeError(f"cost must be a Budget; got {type(cost).__name__}")
        self._budget = self._budget + cost

    def exact_model(self, x: np.ndarray, context: Any) -> TabularModel:
        """The exact model of ``M_{x,ξ}`` for the leader: one counted ``model_queries`` (the
        model-based track's access; sweeps or solves on the model cost nothing more).

        Raises:
            ValueError: if the problem has no tabular model, or for an invalid ``x``/context.
        """
        if not self.problem.is_tabular:
            raise ValueError(f"{self.problem!r} has no exact (tabular) model")
        model = self.problem.tabular(self.problem.check_x(x), self.problem.context_index(context))
        self.charge(Budget(model_queries=1))
        return model

    def counted(self, sampler: Any) -> CountedSampler:
        """``sampler`` (a :class:`~bilevel_envs.rollouts.TrajectorySampler`) with every
        transition it samples charged to :attr:`budget`."""
        return CountedSampler(sampler, self.charge)

    def _response_cost(self, response: FollowerResponse) -> Budget:
        if response.cost is None:
            if not self._cost_warned:
                warnings.warn(f"follower {self.follower!r} does not report its cost "
                              "(FollowerResponse.cost): the budget counts no follower training",
                              stacklevel=3)
                self._cost_warned = True
            return Budget()
        return response.cost

    # ------------------------------------------------------------------ rendering
    def render(self) -> str | np.ndarray | None:
        """The ``"ansi"`` text view (or a subclass's ``"rgb_array"`` picture) of the last step;
        ``None`` (with Gymnasium's warning) without a render mode."""
        if self.render_mode == "ansi":
            return self.render_text()
        if self.render_mode == "rgb_array":
            return self.render_rgb()
        self._warn_no_render_mode()
        return None

    def render_text(self) -> str:
        """A few lines: the step in the episode, the last ``x``, the ``J`` estimate (and exact
        value), the contexts served and the budget used where the env counts one."""
        lines = [f"{type(self).__name__}: leader step {self._t} of the episode"]
        step = self.last_step
        if step is None:
            lines.append("no step since reset")
        else:
            lines.append(f"x: {self.describe_x(step.x)}")
            if step.objective_estimate is not None and self.n_rollout_steps:
                transitions = sum(int(f.rollouts.mask.sum()) for f in step.followers
                                  if f.rollouts is not None)
                lines.append(f"J estimate: {step.objective_estimate:.6g} (Monte-Carlo, "
                             f"{transitions:,} follower transitions)")
            if step.objective_exact is not None:
                lines.append(f"J exact: {step.objective_exact:.6g}")
            names = [self.problem.context_name(c) for c in step.contexts]
            lines.append(f"contexts: {', '.join(map(str, names))}; follower {self.follower!r}")
        budget = getattr(self, "budget", None)
        if budget is not None:
            lines.append(f"budget used: {_describe_budget(budget)}")
        return "\n".join(lines) + "\n"

    def describe_x(self, x: np.ndarray) -> str:
        """One line about ``x``: every value when there are at most 8, else a summary."""
        x = np.asarray(x, dtype=np.float64)
        if x.size <= 8:
            return "[" + ", ".join(f"{v:.4g}" for v in x.ravel()) + "]"
        return (f"{x.size} values, min {x.min():.4g}, mean {x.mean():.4g}, max {x.max():.4g}, "
                f"|x| {np.linalg.norm(x):.4g}")

    def render_rgb(self) -> np.ndarray:
        """The ``"rgb_array"`` picture; subclasses that declare the mode implement it."""
        raise TypeError(f"{type(self).__name__} has no 'rgb_array' view; render modes: "
                        f"{self.metadata['render_modes']}")

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict[str, Any]:
        """The env without its record of the last step and without warm starts that are not
        arrays: the pickled size stays bounded however many steps were taken."""
        state = self.__dict__.copy()
        state["last_step"] = None
        state["_warm"] = {c: w for c, w in self._warm.items() if isinstance(w, np.ndarray)}
        return state

    # ------------------------------------------------------------------ checkpoints
    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The env's resumable state as ``(json_data, arrays)`` — no pickling.

        Covers the random generator, the step counter, the budget used and the followers' warm
        starts when they are arrays (soft VI / soft Q tables). Other warm starts (e.g. SB3
        models) are dropped: after :meth:`set_state` those followers restart cold.
        """
        data: dict[str, Any] = {"t": self._t,
                                "rng": to_plain_data(self.np_random.bit_generator.state),
                                "warm_contexts": [], "budget": self._budget.as_dict()}
        arrays: dict[str, np.ndarray] = {}
        for context, warm in self._warm.items():
            if isinstance(warm, np.ndarray):
                data["warm_contexts"].append(int(context))
                arrays[f"warm_{int(context)}"] = warm
        return data, arrays

    def set_state(self, data: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Restore a state from :meth:`get_state` (e.g. read from a checkpoint file).

        Raises:
            ValueError: naming the field, for anything that does not fit this env: unknown or
                missing fields (``budget`` may be missing: states written before budgets were
                counted resume at zero), a step counter that is not an integer ``>= 0``, a
                budget that is not counts ``>= 0``, a generator state
                of another kind, a warm start of a context the problem does not have or that its
                follower refuses (wrong shape, NaN).
        """
        if not isinstance(data, dict) or not {"t", "rng", "warm_contexts"} <= set(data) \
                or not set(data) <= {"t", "rng", "warm_contexts", "budget"}:
            got = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"env state must hold 't', 'rng', 'warm_contexts' (and 'budget'); "
                             f"got {got}")
        t = check_int("env state 't'", data["t"], 0)
        budget = data.get("budget", {})
        if not isinstance(budget, dict):
            raise ValueError(f"env state 'budget' must be a dict of counts; got {budget!r}")
        budget = Budget.from_dict(budget)
        contexts = data["warm_contexts"]
        if not isinstance(contexts, list) or len(set(map(str, contexts))) != len(contexts):
            raise ValueError(f"env state 'warm_contexts' must be a list of distinct contexts; "
                             f"got {contexts!r}")
        warm = {}
        for context in contexts:
            index = check_int("a warm-start context", context, 0, self.problem.n_contexts - 1)
            if f"warm_{index}" not in arrays:
                raise ValueError(f"the warm start of context {index} is missing")
            warm[index] = self.follower.check_warm_start(self.problem, index,
                                                         arrays[f"warm_{index}"])
        if self._np_random is None:
            self.reset()
        generator = self.np_random.bit_generator
        previous = generator.state
        try:
            generator.state = data["rng"]
        except (TypeError, ValueError, KeyError) as exc:
            generator.state = previous
            raise ValueError(f"env state 'rng' is not a {type(generator).__name__} state: "
                             f"{exc}") from None
        self._t, self._warm, self._budget = t, warm, budget

    def fingerprint(self) -> str:
        """A short hash of what defines this env's steps: the problem
        (:meth:`~bilevel_envs.problem.BilevelProblem.fingerprint`), the follower and its
        arguments, the contexts, the rollout sizes, the objective and the oracle. Leader
        checkpoints record it."""
        settings = (self.problem.fingerprint(), repr(self.follower), self.context_mode,
                    tuple(self.fixed_contexts), self.n_followers, self.n_envs,
                    self.n_rollout_steps, self.objective, self.oracle_backend)
        return hashlib.sha256(repr(settings).encode()).hexdigest()[:16]

    # ------------------------------------------------------------------ helpers
    @contextlib.contextmanager
    def common_random_numbers(self) -> Iterator[None]:
        """Within the block, every ``step`` starts from the same random state (the same contexts,
        follower seeds and rollout uniforms) and from the same follower warm starts, those at
        the block's start (each step trains a copy: :meth:`Follower.fork_warm_start`): common
        random numbers for finite differences, so that two learned followers differ by what
        the two ``x`` change, not by one having trained on top of the other. After the block
        the followers continue from the block's first step."""
        if self._np_random is None:
            raise RuntimeError("call reset() before using common_random_numbers()")
        self._crn_state = copy.deepcopy(self.np_random.bit_generator.state)
        self._crn_warm, self._crn_first_warm = dict(self._warm), None
        try:
            yield
        finally:
            if self._crn_first_warm is not None:
                self._warm = self._crn_first_warm
            self._crn_state = self._crn_warm = self._crn_first_warm = None

    def exact_values(self, step: LeaderStep | None = None) -> np.ndarray:
        """Exact leader value ``μ·V̄`` of each follower's policy in ``step`` (default: the last
        step), on the step's exact models (tabular problems with a decomposable objective)."""
        step = self.last_step if step is None else step
        if step is None:
            raise RuntimeError("no step has been taken yet")
        return self._exact_values(step.followers)

    def _exact_values(self, followers: Sequence[FollowerStep]) -> np.ndarray:
        if not (self.problem.is_tabular and self.problem.decomposable):
            raise ValueError("exact leader values need a tabular problem with a decomposable "
                             "objective")
        values = []
        for f in followers:
            table = f.response.policy.action_probs(np.arange(f.model.n_states))
            values.append(float(leader_values(f.model, table, self.problem.lam,
                                              with_gradient=False).objective))
        return np.array(values)

    def _model(self, x: np.ndarray, context: int, response: FollowerResponse
               ) -> TabularModel | None:
        """The exact model of ``M_{x,ξ}`` for this step: the follower's, or built once here."""
        if response.model is not None:
            return response.model
        return self.problem.tabular(x, context) if self.problem.is_tabular else None

    def _respond(self, x: np.ndarray, context: int) -> FollowerResponse:
        seed = int(self.np_random.integers(0, 2**31 - 1))
        warm = self._warm.get(context)
        if self._crn_warm is not None:
            warm = self._crn_warm.get(context)
            warm = None if warm is None else self.follower.fork_warm_start(warm)
        response = self.follower.respond(self.problem, x, context, seed=seed, warm_start=warm)
        self._warm[context] = response.warm_start
        return response

    def _step_contexts(self) -> tuple[list[int], np.ndarray]:
        if self.context_mode == "sample":
            contexts = [self.problem.sample_context(self.np_random)
                        for _ in range(self.n_followers)]
            return contexts, np.full(len(contexts), 1.0 / len(contexts))
        if self.context_mode == "all":
            return list(range(self.problem.n_contexts)), np.asarray(self.problem.context_probs)
        contexts = list(self.fixed_contexts)
        return contexts, np.full(len(contexts), 1.0 / len(contexts))

    def _parse_contexts(self, contexts) -> tuple[str, list[int]]:
        if isinstance(contexts, str):
            if contexts not in CONTEXT_MODES:
                raise ValueError(f"contexts must be one of {CONTEXT_MODES} or a list of contexts;"
                                 f" got {contexts!r}")
            return contexts, []
        indices = [self.problem.context_index(c) for c in contexts]
        if not indices:
            raise ValueError("contexts must not be empty")
        return "fixed", indices

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.problem!r}, follower={self.follower!r}, "
                f"contexts={self.context_mode!r})")


def _describe_budget(budget: Any) -> str:
    """A budget counter as ``name value`` pairs: a mapping, a dataclass, an object with
    ``as_dict()``, or its ``str``."""
    if hasattr(budget, "as_dict"):
        budget = budget.as_dict()
    elif dataclasses.is_dataclass(budget) and not isinstance(budget, type):
        budget = dataclasses.asdict(budget)
    if isinstance(budget, Mapping):
        return ", ".join(f"{name} {value:,}" if isinstance(value, (int, np.integer))
                         else f"{name} {value}" for name, value in budget.items())
    return str(budget)
