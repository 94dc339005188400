"""`Leader`: projected gradient ascent on the leader objective J(x), shared by every algorithm.

Subclasses supply one method, :meth:`Leader.estimate_gradient`; this module owns the loop: the
clipped ascent step (:mod:`leaders.optim`), the projection onto ``X``, seeding, the env's episodes,
callbacks (:mod:`leaders.callbacks`), a progress bar, CSV/TensorBoard logs, periodic exact
evaluation on tabular problems, and checkpoints (``.npz`` with a JSON header; loading never
executes code) with exact resume.
"""

from __future__ import annotations

import abc
import csv
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from bilevel_envs.exact import ExactSolver, exact_objective
from bilevel_envs.plain_data import to_plain_data
from bilevel_envs.problem import BilevelProblem
from bilevel_envs.validation import check_int
from leaders.callbacks import as_callbacks
from leaders.optim import OPTIMIZERS, check_clip_groups, clip_by_norm

FORMAT_VERSION = 1


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
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be positive or None; got {max_grad_norm}")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}; got {optimizer!r}")
        self.learning_rate = float(learning_rate)
        self.max_grad_norm = None if max_grad_norm is None else float(max_grad_norm)
        self.clip_groups = check_clip_groups(clip_groups, int(np.prod(self.x_space.shape)))
        self.optimizer = OPTIMIZERS[optimizer](learning_rate)
        self.seed = seed
        seeds = np.random.SeedSequence(seed).spawn(2)
        self.rng = np.random.default_rng(seeds[0])
        self._env_seed = int(seeds[1].generate_state(1)[0])
        self.x = self._initial_x() if x0 is None else self._check_x(x0, "x0")
        self.num_iterations = 0
        self.log_dir = None if log_dir is None else Path(log_dir)
        self.tensorboard, self.verbose, self.log_interval = tensorboard, verbose, log_interval
        self._records: list[dict[str, Any]] = []
        self._env_ready = False
        self._env_resets = 0
        self._exact: ExactSolver | None = None
        self._writer = None

    #: whether the algorithm needs ``env.unwrapped.problem`` (HPGD and AMD do; ZeroOrder not)
    requires_problem: ClassVar[bool] = True

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

    # ------------------------------------------------------------------ algorithm hook
    def query(self, x: np.ndarray) -> tuple[float, dict[str, Any]]:
        """One oracle query: ``env.step(x)``; returns the reward (the env's estimate of ``J(x)``)
        and the info dict. The env's episodes are the loop's business: when a step ends the
        episode (the env's horizon), the next iteration starts a new one with ``reset``."""
        _, reward, terminated, truncated, info = self.env.step(x)
        if terminated or truncated:
            self._env_ready = False
        return float(reward), info

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
        bar = _progress_bar(n_iterations) if progress_bar else None
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
        self._records.append(record)
        return record

    def exact_objective(self, x: np.ndarray | None = None) -> float:
        """Exact ``J(x)`` (default: the current ``x``) on tabular problems, warm-started; for a
        trajectory-level objective, :func:`bilevel_envs.tabular.exact_objective` (the problem's
        own, where it has one)."""
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

    def save(self, path: str | os.PathLike) -> Path:
        """Write a checkpoint (``.npz`` of arrays + a JSON header; no pickle), atomically."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_suffix(".npz")
        env_data, env_arrays = self.env.unwrapped.get_state() if hasattr(
            self.env.unwrapped, "get_state") else ({}, {})
        extra_data, extra_arrays = self._extra_state()
        header = {
            "format_version": FORMAT_VERSION, "class": type(self).__name__,
            "hyperparameters": self.hyperparameters(), "num_iterations": self.num_iterations,
            "rng": to_plain_data(self.rng.bit_generator.state), "env_seed": self._env_seed,
            "env_ready": self._env_ready, "env_resets": self._env_resets, "env": env_data,
            "extra": extra_data,
            "records": self._records,
        }
        arrays = {"x": self.x}
        arrays.update({f"opt_{k}": np.asarray(v) for k, v in self.optimizer.state.items()})
        arrays.update({f"env_{k}": v for k, v in env_arrays.items()})
        arrays.update({f"extra_{k}": v for k, v in extra_arrays.items()})
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
        os.close(fd)
        try:
            with open(tmp, "wb") as f:
                np.savez(f, header=np.array(json.dumps(to_plain_data(header))), **arrays)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, env: gym.Env, **overrides: Any) -> Leader:
        """Rebuild a leader from :meth:`save` on ``env`` and restore its state (and the env's).

        Continuing with :meth:`learn` reproduces an uninterrupted run with the same seed.
        """
        with np.load(Path(path), allow_pickle=False) as data:
            header = json.loads(str(data["header"]))
            arrays = {k: np.array(data[k]) for k in data.files if k != "header"}
        if header.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unsupported checkpoint format {header.get('format_version')!r}")
        if header["class"] != cls.__name__:
            raise ValueError(f"{path} holds a {header['class']} checkpoint, not {cls.__name__}")
        kwargs = {k: v for k, v in header["hyperparameters"].items() if k != "algorithm"}
        kwargs.update(overrides)
        leader = cls(env, **kwargs)
        leader.x = arrays["x"]
        leader.optimizer.state = {k[4:]: v for k, v in arrays.items() if k.startswith("opt_")}
        leader.num_iterations = int(header["num_iterations"])
        leader.rng.bit_generator.state = header["rng"]
        leader._env_seed = int(header["env_seed"])
        leader._records = header["records"]
        leader._env_resets = int(header.get("env_resets", 0))
        if header["env"] and (header["env_ready"] or leader._env_resets):
            env.reset()  # satisfies the wrappers' reset-before-step; the state is replaced next
            env.unwrapped.set_state(header["env"], {k[4:]: v for k, v in arrays.items()
                                                    if k.startswith("env_")})
            leader._env_ready = bool(header["env_ready"])
        leader._set_extra_state(header["extra"], {k[6:]: v for k, v in arrays.items()
                                                  if k.startswith("extra_")})
        return leader

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items()
                           if k != "algorithm")
        return f"{type(self).__name__}({params})"


def _progress_bar(total: int):
    try:
        from tqdm.auto import tqdm
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("progress_bar=True needs tqdm: pip install 'bilevel-envs[progress]'"
                          ) from exc
    return tqdm(total=total, unit="it")
