"""`Leader`: projected gradient ascent on the leader objective J(x), shared by every algorithm.

Subclasses supply one method, :meth:`Leader.estimate_gradient`; this module owns the loop: the
clipped ascent step (:mod:`leaders.optim`), the projection onto ``X``, seeding, the env's episodes,
callbacks (:mod:`leaders.callbacks`), a progress bar, CSV/TensorBoard logs, periodic exact
evaluation on tabular problems, and checkpoints (``.npz`` with a JSON header; loading never
executes code) with exact resume.
"""

from __future__ import annotations

import abc
import contextlib
import csv
import inspect
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from bilevel_envs.budget import Budget
from bilevel_envs.exact import ExactSolver, exact_objective
from bilevel_envs.plain_data import to_plain_data
from bilevel_envs.problem import BilevelProblem
from bilevel_envs.tabular import TabularModel
from bilevel_envs.validation import check_bool, check_choice, check_float, check_int
from leaders.callbacks import as_callbacks
from leaders.checkpoints import FORMAT_VERSION as CHECKPOINT_FORMAT
from leaders.checkpoints import CheckpointError, read_checkpoint, write_checkpoint
from leaders.optim import OPTIMIZERS, check_clip_groups, clip_by_norm


# ---------------------------------------------------------------------------- the leader
class Leader(abc.ABC):
    """Base class of the leader algorithms: projected, clipped stochastic gradient ascent on J.

    Each iteration ``t``: ``g_t = estimate_gradient()`` at ``x_t``; ``x_{t+1} = Π_X(step(x_t,
    clip(g_t)))`` with ``step`` SGD (``x + α g``) or Adam and ``Π_X`` the clip onto the bounds of
    ``x_space`` (documented projection; the only silent change of ``x``).

    Args:
        env: a leader env (``gym.make("bilevel/...")``); its ``unwrapped.problem`` is used.
        learning_rate: step size α.
        max_grad_norm: clip the gradient estimate to this Euclidean norm (``None``: no clipping).
        optimizer: ``"sgd"`` (default, as in the paper) or ``"adam"``.
        seed: seeds the leader's generator (initial x, its own sampling) and the env's reset.
        x0: initial parameter; default ``problem.sample_x_init(rng)``.
        log_dir: directory for ``progress.csv`` (and TensorBoard events with ``tensorboard=True``).
        tensorboard: also write TensorBoard scalars (needs torch and tensorboard).
        verbose: 0 silent, 1 a line every ``log_interval`` iterations.
        log_interval: iterations between log lines / CSV flushes.
        clip_groups: clip each of these groups of coordinates (lists of flat indices that split
            ``x``) to ``max_grad_norm`` separately, as the authors' tax-design code clips the
            income tax and the VATs (default ``None``: one global norm).
    """

    #: algorithm name, used in checkpoints and results
    algorithm: ClassVar[str] = "leader"
    #: benchmark track: ``"sample"`` (the leader sees only sampled follower behaviour: it never
    #: calls :meth:`exact_model`) or ``"model"`` (it reads exact models of ``M_{x,ξ}``)
    track: ClassVar[str] = "sample"
    #: the leader needs a decomposable J (a discounted sum of leader rewards): AMD and RT-Q
    #: differentiate the model's leader values, which a trajectory-level J (RLHF) does not have
    decomposable_only: ClassVar[bool] = False

    def __init__(self, env: gym.Env, learning_rate: float = 0.1,
                 max_grad_norm: float | None = 1.0, optimizer: str = "sgd",
                 seed: int | None = None, x0: np.ndarray | None = None,
                 log_dir: str | os.PathLike | None = None, tensorboard: bool = False,
                 verbose: int = 0, log_interval: int = 100,
                 clip_groups: Sequence[Sequence[int]] | None = None):
        self.env = env
        # Leader envs carry their problem; a plain env (ZeroOrder's only need) defines X itself.
        self.problem: BilevelProblem | None = getattr(env.unwrapped, "problem", None)
        if self.problem is None and self.requires_problem:
            raise TypeError(f"{type(self).__name__} needs a bilevel leader env "
                            f"(env.unwrapped.problem); got {env!r}")
        self.x_space = self.problem.x_space if self.problem is not None else env.action_space
        if not isinstance(self.x_space, gym.spaces.Box):
            raise TypeError(f"the leader's action space must be a Box; got {self.x_space!r}")
        self.learning_rate = check_float("learning_rate", learning_rate, 0.0, low_open=True)
        self.max_grad_norm = (None if max_grad_norm is None else check_float(
            "max_grad_norm (or None)", max_grad_norm, 0.0, low_open=True))
        self.clip_groups = check_clip_groups(clip_groups, int(np.prod(self.x_space.shape)))
        self.optimizer = OPTIMIZERS[check_choice("optimizer", optimizer, sorted(OPTIMIZERS))](
            self.learning_rate)
        self.seed = None if seed is None else check_int("seed (or None)", seed, 0)
        seeds = np.random.SeedSequence(self.seed).spawn(2)
        self.rng = np.random.default_rng(seeds[0])
        self._env_seed = int(seeds[1].generate_state(1)[0])
        self.x = self._initial_x() if x0 is None else self._check_x(x0, "x0")
        self.num_iterations = 0
        if log_dir is not None and not isinstance(log_dir, (str, os.PathLike)):
            raise ValueError(f"log_dir must be a path or None; got {log_dir!r}")
        self.log_dir = None if log_dir is None else Path(log_dir)
        self.tensorboard = check_bool("tensorboard", tensorboard)
        self.verbose = check_int("verbose", verbose, 0, 1)
        self.log_interval = check_int("log_interval", log_interval, 1)
        self._records: list[dict[str, Any]] = []
        self._env_ready = False
        self._env_resets = 0
        self._exact: ExactSolver | None = None
        self._writer = None

    #: whether the algorithm needs ``env.unwrapped.problem`` (HPGD and AMD do; ZeroOrder not)
    requires_problem: ClassVar[bool] = True

    @property
    def env_seed(self) -> int:
        """The seed of the env's first ``reset``, drawn from :attr:`seed` (later episodes
        continue the env's random stream)."""
        return self._env_seed

    def _check_x(self, x: Any, name: str) -> np.ndarray:
        if self.problem is not None:
            return self.problem.check_x(x, name=name)
        arr = np.asarray(x, dtype=np.float64)
        if arr.shape != self.x_space.shape or not np.all(np.isfinite(arr)) \
                or not self.x_space.contains(arr.astype(self.x_space.dtype)):
            raise ValueError(f"{name} must be a finite array of shape {self.x_space.shape} "
                             f"inside [{self.x_space.low.min()}, {self.x_space.high.max()}]")
        return arr.copy()

    def _initial_x(self) -> np.ndarray:
        if self.problem is not None:
            return self.problem.sample_x_init(self.rng)
        low, high = self.x_space.low.astype(float), self.x_space.high.astype(float)
        centre = np.where(np.isfinite(low) & np.isfinite(high), (low + high) / 2, 0.0)
        return np.clip(centre, low, high)

    def exact_model(self, context: int) -> TabularModel:
        """The exact model of ``M_{x,ξ}`` at the current :attr:`x`, for model-based leaders
        (:attr:`track` ``"model"``): through the env's counted
        :meth:`~bilevel_envs.LeaderEnv.exact_model` (one ``model_queries`` of its budget), or
        from the problem directly when the env counts no budget."""
        counted = getattr(self.env.unwrapped, "exact_model", None)
        if counted is not None:
            return counted(self.x, context)
        return self.problem.tabular(self.x, context)

    # ------------------------------------------------------------------ algorithm hook
    def query(self, x: np.ndarray) -> tuple[float, dict[str, Any]]:
        """One oracle query: ``env.step(x)``; returns the reward (the env's estimate of ``J(x)``)
        and the info dict. The env's episodes are the loop's business: when a step ends the
        episode (the time limit of its spec), the next iteration starts a new one with ``reset``."""
        _, reward, terminated, truncated, info = self.env.step(x)
        if terminated or truncated:
            self._env_ready = False
        return float(reward), info

    def paired_queries(self, enabled: bool = True) -> contextlib.AbstractContextManager:
        """A block in which every :meth:`query` sees the same env randomness (the env's
        ``common_random_numbers()``: same contexts, follower seeds and rollout uniforms), for
        finite differences; a no-op when ``enabled`` is false or the env has no such support."""
        crn = getattr(self.env.unwrapped, "common_random_numbers", None)
        if enabled and crn is not None:
            return crn()
        return contextlib.nullcontext()

    @abc.abstractmethod
    def estimate_gradient(self) -> tuple[np.ndarray, dict[str, Any]]:
        """Estimate ``dJ/dx`` at :attr:`x`; return it with plain-data diagnostics.

        The diagnostics may contain ``"objective_estimate"`` (the algorithm's own estimate of
        ``J(x_t)``) and ``"contexts"``; they are stored in :attr:`history`.
        """

    def hyperparameters(self) -> dict[str, Any]:
        """Plain-data description of the run (saved with checkpoints and results)."""
        return {"algorithm": self.algorithm, "learning_rate": self.learning_rate,
                "max_grad_norm": self.max_grad_norm, "optimizer": self.optimizer.name,
                "clip_groups": self.clip_groups, "seed": self.seed}

    # ------------------------------------------------------------------ the loop
    def learn(self, n_iterations: int, callback: Any = None, progress_bar: bool = False,
              eval_every: int | Callable[[int], bool] | None = None) -> Leader:
        """Run ``n_iterations`` more iterations (counters continue across calls).

        Args:
            n_iterations: number of gradient steps to take.
            callback: a :class:`Callback`, a function ``(leader, record) -> bool | None`` or a
                list of them; returning ``False`` stops training.
            progress_bar: show a tqdm progress bar.
            eval_every: every this many iterations (or at iterations ``t`` where
                ``eval_every(t)`` is true), record the exact ``J(x_t)`` of the pre-update iterate
                and each context's exact value (tabular problems; for a trajectory-level
                objective only ``J``, from the problem's ``exact_objective``).

        Raises:
            ValueError: for ``eval_every`` when the exact ``J`` is not available.
        """
        n_iterations = check_int("n_iterations", n_iterations, 0)
        if eval_every is not None:
            if self.problem is None or not self.problem.is_tabular:
                raise ValueError("eval_every needs a tabular problem")
            if not self.problem.decomposable:
                try:  # the problem computes J itself (e.g. by enumeration): fail now, not later
                    self.exact_objective()
                except ValueError as exc:
                    raise ValueError(f"eval_every needs the exact J, which {self.problem!r} "
                                     f"cannot compute here: {exc}") from exc
            if not callable(eval_every):
                every = check_int("eval_every (or a function of the iteration)", eval_every, 1)
                eval_every = lambda t: t % every == 0  # noqa: E731
        callbacks = as_callbacks(callback)
        bar = _progress_bar(n_iterations) if check_bool("progress_bar", progress_bar) else None
        for cb in callbacks:
            cb.on_training_start(self)
        try:
            for _ in range(n_iterations):
                record = self._iterate(eval_every)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(J=f"{record['objective_estimate']:.4f}", refresh=False)
                self._log(record)
                if not all(cb.on_step(self, record) for cb in callbacks):
                    break
        finally:
            for cb in callbacks:
                cb.on_training_end(self)
            if bar is not None:
                bar.close()
            self._flush_logs()
        return self

    def _iterate(self, eval_every: Callable[[int], bool] | None) -> dict[str, Any]:
        if not self._env_ready:
            # Seeded once; later episodes continue the env's random stream.
            self.env.reset(seed=self._env_seed if self._env_resets == 0 else None)
            self._env_resets += 1
            self._env_ready = True
        t = self.num_iterations
        x_t = self.x
        record: dict[str, Any] = {"iteration": t}
        if eval_every is not None and eval_every(t):
            if self.problem.decomposable:
                values = self.exact_context_values(x_t)
                record["exact_objective"] = float(self.problem.context_probs @ values)
                record.update({f"exact_context_{i}": float(v) for i, v in enumerate(values)})
            else:
                record["exact_objective"] = self.exact_objective(x_t)
        grad, info = self.estimate_gradient()
        grad = np.asarray(grad, dtype=np.float64).reshape(self.x.shape)
        if not np.all(np.isfinite(grad)):
            raise FloatingPointError(f"{self.algorithm}: non-finite gradient estimate at "
                                     f"iteration {t}")
        step = clip_by_norm(grad, self.max_grad_norm, self.clip_groups)
        self.x = np.clip(self.optimizer.step(x_t, step), self.x_space.low, self.x_space.high)
        self.num_iterations += 1
        record["objective_estimate"] = float(info.get("objective_estimate", np.nan))
        record["grad_norm"] = float(np.linalg.norm(grad))
        for key, value in info.items():
            if key not in record and np.isscalar(value):
                record[key] = value
        if "contexts" in info:
            record["contexts"] = list(info["contexts"])
        budget = getattr(self.env.unwrapped, "budget", None)
        if isinstance(budget, Budget):  # the env's totals after this iteration
            record.update({f"budget_{k}": v for k, v in budget.as_dict().items()})
        self._records.append(record)
        return record

    def exact_objective(self, x: np.ndarray | None = None) -> float:
        """Exact ``J(x)`` (default: the current ``x``) on tabular problems, warm-started; for a
        trajectory-level objective, :func:`bilevel_envs.tabular.exact_objective` (the problem's
        own, where it has one).

        Evaluation, not part of the algorithm: it reads the problem directly, so the env's budget
        does not count it (as ``eval_every`` does not). Algorithms that use exact models call
        :meth:`exact_model`."""
        if not self.problem.decomposable:
            return float(exact_objective(self.problem, self.x if x is None else x))
        return float(self.problem.context_probs @ self.exact_context_values(x))

    def exact_context_values(self, x: np.ndarray | None = None) -> np.ndarray:
        """Each context's exact leader value ``μ·V̄_ξ`` at ``x`` (default: the current ``x``).

        Raises:
            ValueError: for a trajectory-level objective (no per-context leader values).
        """
        if not self.problem.decomposable:
            raise ValueError(f"{self.problem!r} has a trajectory-level objective: there are no "
                             "per-context leader values; use exact_objective()")
        if self._exact is None:
            self._exact = ExactSolver(self.problem)
        return np.asarray(self._exact.per_context(self.x if x is None else x).objective)

    # ------------------------------------------------------------------ history
    @property
    def records(self) -> tuple[dict[str, Any], ...]:
        """One plain-data record per iteration (what :attr:`history` tabulates, plus the
        ``"contexts"`` each iteration served)."""
        return tuple(self._records)

    @property
    def history(self) -> dict[str, np.ndarray]:
        """Per-iteration records as arrays (``NaN`` where a value was not recorded)."""
        keys = []
        for record in self._records:
            keys.extend(k for k in record if k not in keys and k != "contexts")
        out = {k: np.array([r.get(k, np.nan) for r in self._records], dtype=np.float64)
               for k in keys}
        if "iteration" in out:
            out["iteration"] = out["iteration"].astype(np.int64)
        return out

    # ------------------------------------------------------------------ logging
    def _log(self, record: dict[str, Any]) -> None:
        t = record["iteration"]
        if self.verbose and t % self.log_interval == 0:
            exact = record.get("exact_objective")
            extra = f", exact J {exact:.4f}" if exact is not None else ""
            print(f"[{self.algorithm}] iteration {t}: J estimate "
                  f"{record['objective_estimate']:.4f}{extra}, |g| {record['grad_norm']:.3g}")
        if self.log_dir is not None and self.tensorboard:
            writer = self._tensorboard_writer()
            for key, value in record.items():
                if key != "iteration" and isinstance(value, (int, float)):
                    writer.add_scalar(key, value, t)

    def _flush_logs(self) -> None:
        if self.log_dir is None:
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        history = self.history
        with open(self.log_dir / "progress.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(list(history))
            writer.writerows(zip(*history.values()))
        if self._writer is not None:
            self._writer.flush()

    def _tensorboard_writer(self):
        if self._writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:  # pragma: no cover - depends on the environment
                raise ImportError("TensorBoard logging needs torch and tensorboard: "
                                  "pip install 'bilevel-envs[sb3,tensorboard]'") from exc
            self._writer = SummaryWriter(str(self.log_dir))
        return self._writer

    # ------------------------------------------------------------------ checkpoints
    def _extra_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Algorithm-specific state to checkpoint (JSON data, arrays)."""
        return {}, {}

    def _set_extra_state(self, data: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`_extra_state` saved (nothing by default)."""
        return None

    @classmethod
    def hyperparameter_names(cls) -> frozenset[str]:
        """The constructor arguments a checkpoint may set: every keyword of ``__init__`` along the
        class hierarchy except the env, the start point and the logging options (a file never
        chooses paths)."""
        names: set[str] = set()
        for klass in cls.__mro__:
            init = klass.__dict__.get("__init__")
            if init is not None:
                names |= {p.name for p in inspect.signature(init).parameters.values()
                          if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        return frozenset(names - {"self", "env", "x0", "log_dir", "tensorboard", "verbose",
                                  "log_interval"})

    def save(self, path: str | os.PathLike) -> Path:
        """Write a checkpoint (``.npz`` of arrays + a JSON header; no pickle), atomically. It
        records the env's id and a fingerprint of the env and its problem, so that :meth:`load`
        never resumes on a different one by accident."""
        unwrapped = self.env.unwrapped
        env_data, env_arrays = unwrapped.get_state() if hasattr(unwrapped, "get_state") else ({},
                                                                                            {})
        extra_data, extra_arrays = self._extra_state()
        header = {
            "format_version": CHECKPOINT_FORMAT, "class": type(self).__name__,
            "hyperparameters": self.hyperparameters(), "num_iterations": self.num_iterations,
            "rng": to_plain_data(self.rng.bit_generator.state), "env_seed": self._env_seed,
            "env_ready": self._env_ready, "env_resets": self._env_resets, "env": env_data,
            "env_fingerprint": _env_fingerprint(self.env),
            "env_id": None if self.env.spec is None else self.env.spec.id,
            "extra": extra_data, "records": self._records,
        }
        arrays = {"x": self.x}
        arrays.update({f"opt_{k}": np.asarray(v) for k, v in self.optimizer.state.items()})
        arrays.update({f"env_{k}": v for k, v in env_arrays.items()})
        arrays.update({f"extra_{k}": v for k, v in extra_arrays.items()})
        return write_checkpoint(path, header, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike, env: gym.Env, *, allow_other_env: bool = False,
             **overrides: Any) -> Leader:
        """Rebuild a leader from :meth:`save` on ``env`` and restore its state (and the env's).

        Continuing with :meth:`learn` reproduces an uninterrupted run with the same seed.

        Args:
            path: the checkpoint.
            env: the env to resume on; it must be the one the checkpoint was saved on (same id,
                arguments and problem) unless ``allow_other_env=True``.
            allow_other_env: resume on a different env anyway (e.g. another λ, on purpose).
            **overrides: constructor arguments replacing the saved ones (and the logging options,
                which are never read from a file).

        Raises:
            CheckpointError: (a ``ValueError``) for a damaged, foreign or hostile file, another
                leader class or env, or any field or array that does not fit.
        """
        header, arrays = read_checkpoint(path)
        source = str(path)
        if header["class"] != cls.__name__:
            raise CheckpointError(f"{source} holds a {header['class']} checkpoint, not "
                                  f"{cls.__name__}")
        saved = dict(header["hyperparameters"])
        if saved.pop("algorithm", cls.algorithm) != cls.algorithm:
            raise CheckpointError(f"{source}: hyperparameters of another algorithm")
        unknown = sorted(set(saved) - cls.hyperparameter_names())
        if unknown:
            raise CheckpointError(f"{source}: unknown hyperparameters {unknown} (a checkpoint may "
                                  f"set {sorted(cls.hyperparameter_names())})")
        current = _env_fingerprint(env)
        if not allow_other_env and header["env_fingerprint"] != current:
            raise CheckpointError(
                f"{source} was saved on another env ({header['env_id']!r}, fingerprint "
                f"{header['env_fingerprint']}; this env: {current}): its problem or its settings "
                "(λ, n_envs, follower, ...) differ. Pass allow_other_env=True to resume anyway")
        try:
            leader = cls(env, **{**saved, **overrides})
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{source}: the saved hyperparameters are invalid: {exc}"
                                  ) from None
        try:
            leader._restore(header, arrays)
        except CheckpointError:
            raise
        except (TypeError, ValueError, KeyError) as exc:
            raise CheckpointError(f"{source}: {exc}") from None
        return leader

    def _restore(self, header: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Put the validated state of a checkpoint into this (freshly built) leader and env."""
        x = arrays.get("x")
        if x is None:
            raise CheckpointError("array 'x' is missing")
        self.x = self._check_x(x, "the checkpoint's x")
        self.optimizer.load_state({k[4:]: v for k, v in arrays.items() if k.startswith("opt_")},
                                  self.x.shape)
        self.num_iterations = header["num_iterations"]
        self.rng.bit_generator.state = header["rng"]
        self._env_seed, self._env_resets = header["env_seed"], header["env_resets"]
        self._records = [_check_record(r) for r in header["records"]]
        if header["env"] and (header["env_ready"] or self._env_resets):
            self.env.reset()  # satisfies the wrappers' reset-before-step; replaced next
            self.env.unwrapped.set_state(header["env"], {k[4:]: v for k, v in arrays.items()
                                                         if k.startswith("env_")})
            self._env_ready = header["env_ready"]
        self._set_extra_state(header["extra"], {k[6:]: v for k, v in arrays.items()
                                                if k.startswith("extra_")})

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items()
                           if k != "algorithm")
        return f"{type(self).__name__}({params})"


def _env_fingerprint(env: gym.Env) -> str | None:
    fingerprint = getattr(env.unwrapped, "fingerprint", None)
    return fingerprint() if callable(fingerprint) else None


def _check_record(record: Any) -> dict[str, Any]:
    """A history record from a file: a dict of numbers (and the list of contexts)."""
    if not isinstance(record, dict) or not all(
            isinstance(k, str) and (v is None or isinstance(v, (int, float, str, bool, list)))
            for k, v in record.items()):
        raise CheckpointError(f"history records must map names to numbers; got {record!r:.80}")
    if not isinstance(record.get("iteration"), int) or record["iteration"] < 0:
        raise CheckpointError(f"a history record needs an iteration >= 0; got {record!r:.80}")
    return record


def _progress_bar(total: int):
    try:
        from tqdm.auto import tqdm
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("progress_bar=True needs tqdm: pip install 'bilevel-envs[progress]'"
                          ) from exc
    return tqdm(total=total, unit="it")
