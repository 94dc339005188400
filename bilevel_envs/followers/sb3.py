"""Stable-Baselines3 agents as followers: PPO, A2C, DQN, soft DQN or any SB3 algorithm.

The agent trains on the problem's own Gymnasium env ``problem.follower_env(x, ξ)``, so it works
on every problem (tabular or not). Across leader steps it is warm-started: the response's
``warm_start`` is the trained SB3 model, which keeps its vectorised env; the next call moves that
env to the new ``x`` in place (:class:`FollowerEnvSlot`) and continues training
(``model.learn(..., reset_num_timesteps=False)``): neither the model nor the env is rebuilt.

torch and stable-baselines3 are imported on first use; without them the follower says which extra
to install.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import random
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

from bilevel_envs.budget import Budget
from bilevel_envs.followers.base import Follower, FollowerResponse
from bilevel_envs.policies import sample_rows
from bilevel_envs.validation import check_bool, check_int

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.policies import BasePolicy

    from bilevel_envs.problem import BilevelProblem

MISSING_SB3 = ('this follower needs torch and stable-baselines3; install them with '
               '`pip install "bilevel-envs[sb3]"` (on a CPU-only machine install torch first: '
               '`pip install torch==2.13.0`)')

#: algorithm name -> "module:Class" (any other SB3 algorithm: pass "module:Class" or the class).
ALGOS: dict[str, str] = {
    "A2C": "stable_baselines3:A2C",
    "DQN": "stable_baselines3:DQN",
    "PPO": "stable_baselines3:PPO",
    "SoftDQN": "bilevel_envs.followers.soft_dqn:SoftDQN",
}
#: algo_kwargs the follower sets itself
_RESERVED = ("env", "policy", "seed")


def require_sb3() -> Any:
    """Import and return ``torch``, or raise an ``ImportError`` naming the ``sb3`` extra."""
    try:
        import stable_baselines3  # noqa: F401
        import torch
    except ImportError as exc:
        raise ImportError(MISSING_SB3) from exc
    return torch


def resolve_algo(algo: str | type) -> type[BaseAlgorithm]:
    """The SB3 algorithm class named by ``algo`` (a key of :data:`ALGOS`, ``"module:Class"``, or
    a class, returned unchanged).

    Raises:
        ValueError: for an unknown name, listing the known ones.
        TypeError: if the result is not an SB3 algorithm class.
    """
    require_sb3()
    from stable_baselines3.common.base_class import BaseAlgorithm

    if isinstance(algo, str):
        entry_point = ALGOS.get(algo, algo)
        if ":" not in entry_point:
            raise ValueError(f"algo must be one of {sorted(ALGOS)}, a 'module:Class' string or "
                             f"an SB3 algorithm class; got {algo!r}")
        module, name = entry_point.split(":", 1)
        try:
            algo = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"algo {entry_point!r} cannot be imported: {exc}") from exc
    if not (inspect.isclass(algo) and issubclass(algo, BaseAlgorithm)):
        raise TypeError(f"algo must name a stable_baselines3 BaseAlgorithm subclass; got {algo!r}")
    return algo


class SB3Policy:
    """A frozen copy of a trained SB3 policy over ``Discrete`` actions, as a follower policy.

    Action probabilities come from the policy's action distribution (PPO, A2C: the categorical
    ``get_distribution(obs).distribution.probs``), or, for Q-learning policies (DQN, SoftDQN),
    are the Boltzmann policy ``softmax(Q(s, ·)/λ)``: the regularised best response to ``Q``.

    Args:
        policy: an SB3 policy (copied, so later training does not change this object).
        lam: temperature λ of the Boltzmann policy (Q-learning policies only).
    """

    def __init__(self, policy: BasePolicy, lam: float):
        if not (hasattr(policy, "get_distribution") or hasattr(policy, "q_net")):
            raise TypeError(f"{type(policy).__name__} has neither an action distribution "
                            "(get_distribution) nor a Q-network (q_net); cannot derive π(a|s)")
        # A fresh policy with the trained weights, built the way SB3's BasePolicy.load does.
        self.policy = type(policy)(**policy._get_constructor_parameters())
        self.policy.load_state_dict(policy.state_dict())
        self.policy.set_training_mode(False)
        self.lam = float(lam)
        self.n_actions = int(policy.action_space.n)

    def action_probs(self, obs: Any) -> np.ndarray:
        """``π(·|s)`` for a batch of observations (or one): float64 array ``(batch, n_actions)``."""
        th = require_sb3()
        with th.no_grad():
            obs_tensor, _ = self.policy.obs_to_tensor(np.asarray(obs))
            if hasattr(self.policy, "get_distribution"):
                probs = self.policy.get_distribution(obs_tensor).distribution.probs.double()
            else:
                probs = th.softmax(self.policy.q_net(obs_tensor).double() / self.lam, dim=-1)
        probs = probs.cpu().numpy().reshape(-1, self.n_actions)
        return probs / probs.sum(axis=-1, keepdims=True)  # exact normalisation in float64

    def sample(self, obs: Any, rng: np.random.Generator) -> np.ndarray:
        """One action per observation, drawn by inverse CDF with ``rng``."""
        probs = self.action_probs(obs)
        return sample_rows(probs, rng.random(probs.shape[0]))

    def __repr__(self) -> str:
        return f"SB3Policy({type(self.policy).__name__}, n_actions={self.n_actions})"


class FollowerEnvSlot(gym.Wrapper):
    """``problem.follower_env(x, ξ)`` whose ``x`` can be changed in place (:meth:`set_x`).

    SB3 keeps its vectorised env, and the agent its model, across leader steps; only the
    leader's parameter moves. Envs with a ``set_x(x)`` method (e.g. Four-Rooms: new rewards,
    same object) are updated in place; for the others the slot makes the problem's env for the
    new ``x`` behind the same wrapper. Either way the next ``reset`` starts in ``M_{x,ξ}``.

    Args:
        problem: the bilevel problem.
        x: the leader's (validated) parameter.
        context: the context index ξ.
        episode_steps: truncate episodes after this many steps (``None``: the env's own
            limit).
        exploring_starts: start each episode from a uniformly random observation of the
            follower's ``Discrete`` or ``Box`` observation space (passed to the env as
            ``reset(options={"state": ...})``) instead of the initial distribution ``μ``.
    """

    def __init__(self, problem: BilevelProblem, x: np.ndarray, context: Any,
                 episode_steps: int | None = None, exploring_starts: bool = False):
        self.episode_steps, self.exploring_starts = episode_steps, exploring_starts
        self.problem, self.context = problem, context
        super().__init__(self._make(x))
        if exploring_starts and not isinstance(self.observation_space,
                                               (gym.spaces.Discrete, gym.spaces.Box)):
            raise ValueError(f"exploring_starts needs a Discrete or Box observation space; got "
                             f"{self.observation_space}")
        self._start_rng = np.random.default_rng()

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if not self.exploring_starts or (options and "state" in options):
            return self.env.reset(seed=seed, options=options)
        if seed is not None:
            self._start_rng = np.random.default_rng(seed)
        space, rng = self.observation_space, self._start_rng
        if isinstance(space, gym.spaces.Discrete):
            state: Any = int(space.start + rng.integers(space.n))
        else:
            state = rng.uniform(space.low, space.high).astype(space.dtype)
        return self.env.reset(seed=seed, options={**(options or {}), "state": state})

    def _make(self, x: np.ndarray) -> gym.Env:
        env = self.problem.follower_env(x, self.context)
        if self.episode_steps is not None:
            env = gym.wrappers.TimeLimit(env, max_episode_steps=self.episode_steps)
        return env

    def set_x(self, x: np.ndarray) -> None:
        """Move the env to ``M_{x,ξ}`` (takes effect from the next ``reset``)."""
        inner = self.env.unwrapped
        if callable(getattr(inner, "set_x", None)):
            inner.set_x(x)
        else:
            self.env = self._make(x)


class SB3Follower(Follower):
    """A Stable-Baselines3 agent trained on ``problem.follower_env(x, ξ)``.

    The first call builds the agent (``algo(policy, env, seed=seed, gamma=problem.gamma, ...)``,
    CPU) and trains it for ``warmup_timesteps``; later calls with its ``warm_start`` (the trained
    model) continue training for ``total_timesteps`` on the model's own vectorised env, moved
    to the new ``x`` (:class:`FollowerEnvSlot`; nothing is rebuilt), so schedules (learning
    rate, DQN's ε) continue too, and DQN keeps its replay buffer. Training uses one torch thread and
    leaves the global random states (``random``, ``numpy.random``, torch) as it found them; it
    reseeds SB3 (networks, sampling, env resets) from ``seed``, so the same seed and warm start
    give the same policy bit for bit. The warm-start model is trained in place: pass each
    response's ``warm_start`` to one later call (as :class:`~bilevel_envs.LeaderEnv` does);
    ``copy.deepcopy`` it to branch.

    Args:
        algo: ``"PPO"``, ``"A2C"``, ``"DQN"``, ``"SoftDQN"``, another SB3 algorithm as
            ``"module:Class"``, or an SB3 algorithm class. The env's actions are ``Discrete``.
        total_timesteps: environment steps per warm-started call.
        algo_kwargs: keyword arguments of ``algo`` (plain data, e.g. ``{"n_steps": 64}``);
            ``gamma`` defaults to the problem's, ``lam`` (if ``algo`` takes one) to its λ,
            ``device`` to ``"cpu"``. ``env``, ``policy`` and ``seed`` are set by the follower.
        policy: the SB3 policy, a name (``"MlpPolicy"``; SB3 one-hot encodes Discrete
            observations) or a policy class.
        warmup_timesteps: environment steps of the first (cold) call; ``total_timesteps`` if None.
        n_envs: copies of the follower env in the agent's ``DummyVecEnv`` (8 halve the CPU time
            per leader step on Four-Rooms, see docs/followers.md).
        episode_steps: truncate the training episodes after this many steps (``None``: the
            env's own time limit). Truncation is not termination (SB3 bootstraps through it):
            the objective is unchanged, but more of the data comes from near the initial
            distribution ``μ``, where the follower's value is measured.
        exploring_starts: start the training episodes from uniformly random observations
            (the env must accept ``reset(options={"state": ...})``, as tax design's
            households do): Q-learning's targets do not depend on where episodes start, and
            states the current policy does not reach yet (e.g. the savings an optimal
            household builds up) are visited from the beginning.

    The response's policy is an :class:`SB3Policy` snapshot; for DQN, whose Q-values are not
    regularised, it is the Boltzmann policy ``softmax(Q/λ)`` at the problem's λ. ``stats``:
    ``algo``, ``timesteps`` (this call), ``num_timesteps`` (since the cold start),
    ``warm_started``, ``episodes`` (finished in this call) and ``episode_return`` (their mean
    undiscounted follower return, None if none finished).

    Budget (:attr:`~bilevel_envs.followers.FollowerResponse.cost`): the environment steps of the
    call (SB3's ``num_timesteps``, summed over the ``n_envs`` copies; an on-policy algorithm
    completes its last rollout, so this may exceed ``total_timesteps``) and its gradient steps
    (:func:`gradient_steps`).
    """

    name = "sb3"

    def __init__(self, algo: str | type = "PPO", total_timesteps: int = 10_000,
                 algo_kwargs: dict[str, Any] | None = None, policy: str | type = "MlpPolicy",
                 warmup_timesteps: int | None = None, n_envs: int = 1,
                 episode_steps: int | None = None, exploring_starts: bool = False):
        self.total_timesteps = check_int("total_timesteps", total_timesteps, 1)
        self.episode_steps = (None if episode_steps is None
                              else check_int("episode_steps", episode_steps, 1))
        self.exploring_starts = check_bool("exploring_starts", exploring_starts)
        self.warmup_timesteps = (self.total_timesteps if warmup_timesteps is None
                                 else check_int("warmup_timesteps", warmup_timesteps, 1))
        self.n_envs = check_int("n_envs", n_envs, 1)
        algo_kwargs = dict(algo_kwargs or {})
        reserved = sorted(set(algo_kwargs) & set(_RESERVED))
        if reserved:
            raise ValueError(f"algo_kwargs must not set {reserved}: the follower sets "
                             f"{list(_RESERVED)} itself")
        self.algo_class = resolve_algo(algo)
        self.algo = algo if isinstance(algo, str) else self.algo_class.__name__
        self.algo_kwargs, self.policy = algo_kwargs, policy

    def respond(self, problem: BilevelProblem, x: np.ndarray, context: Any,
                seed: int | None = None, warm_start: BaseAlgorithm | None = None
                ) -> FollowerResponse:
        th = require_sb3()
        from stable_baselines3.common.monitor import Monitor
        from stable_baselines3.common.vec_env import DummyVecEnv

        x = problem.check_x(x)
        if warm_start is not None and not isinstance(warm_start, self.algo_class):
            raise TypeError(f"warm_start must be a {self.algo_class.__name__} model "
                            f"from a previous response; got {type(warm_start).__name__}")
        env = None if warm_start is None else _own_env(warm_start, problem, context)
        if env is None:
            env = DummyVecEnv([lambda: Monitor(FollowerEnvSlot(
                problem, x, context, self.episode_steps, self.exploring_starts))
                               for _ in range(self.n_envs)])
        else:
            for monitor in env.envs:
                monitor.env.set_x(x)
        finished = [len(monitor.get_episode_rewards()) for monitor in env.envs]
        with _sandbox(th):
            if warm_start is None:
                model = self._build(problem, env, seed, x, context)
                timesteps = self.warmup_timesteps
            else:
                model = warm_start
                model.set_env(env)  # the same env object; starts new episodes in M_{x,ξ}
                self._move(model, problem, x, context)
                model.set_random_seed(seed)
                timesteps = self.total_timesteps
            before = (int(model.num_timesteps), gradient_steps(model)) if warm_start is not None \
                else (0, 0)
            model.learn(total_timesteps=timesteps, reset_num_timesteps=warm_start is None)
            policy = SB3Policy(model.policy, lam=getattr(model, "lam", problem.lam))
        returns = [r for monitor, n in zip(env.envs, finished)
                   for r in monitor.get_episode_rewards()[n:]]
        stats = {"algo": self.algo, "timesteps": timesteps,
                 "num_timesteps": int(model.num_timesteps),
                 "warm_started": warm_start is not None, "episodes": len(returns),
                 "episode_return": float(np.mean(returns)) if returns else None}
        cost = Budget(transitions=int(model.num_timesteps) - before[0],
                      follower_updates=gradient_steps(model) - before[1])
        return FollowerResponse(policy=policy, warm_start=model, stats=stats, cost=cost)

    def _build(self, problem: BilevelProblem, env: Any, seed: int | None, x: np.ndarray,
               context: Any) -> BaseAlgorithm:
        """A new model on ``env`` (the follower env at ``x`` and ``context``)."""
        kwargs: dict[str, Any] = {"gamma": problem.gamma, "device": "cpu"}
        if "lam" in inspect.signature(self.algo_class).parameters:
            kwargs["lam"] = problem.lam
        kwargs.update(self.algo_kwargs)
        model = self.algo_class(self.policy, env, seed=seed, **kwargs)
        if model.tensorboard_log is None:
            # SB3's default logger makes an empty folder in the temp directory on every
            # learn() call, one per leader step; ours writes where SB3 would (stdout if
            # verbose) and creates nothing.
            from stable_baselines3.common.logger import HumanOutputFormat, Logger

            model.set_logger(Logger(folder=None, output_formats=[HumanOutputFormat(sys.stdout)]
                                    if model.verbose >= 1 else []))
        return model

    def _move(self, model: BaseAlgorithm, problem: BilevelProblem, x: np.ndarray,
              context: Any) -> None:
        """Prepare a warm-started model for the leader's new ``x`` (its env has moved already);
        nothing for a model that sees ``x`` only through its env."""

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(algo={self.algo!r}, total_timesteps={self.total_timesteps},"
                f" warmup_timesteps={self.warmup_timesteps}, algo_kwargs={self.algo_kwargs})")


def _own_env(model: BaseAlgorithm, problem: BilevelProblem, context: Any) -> Any:
    """The model's vectorised env if this follower made it for ``(problem, context)``, else
    ``None`` (a model built elsewhere gets a new env)."""
    env = model.get_env()
    envs = getattr(env, "envs", None)
    if not envs or not all(isinstance(getattr(m, "env", None), FollowerEnvSlot) for m in envs):
        return None
    if any(m.env.problem is not problem or m.env.context != context for m in envs):
        return None
    return env


def gradient_steps(model: BaseAlgorithm) -> int:
    """The gradient steps an SB3 model has taken, from its update counter ``_n_updates``.

    SB3 counts one per gradient step for DQN, soft DQN, SAC and TD3, one per rollout for A2C (a
    single step on the whole rollout) and one per *epoch* for PPO: a PPO epoch is
    ``⌈n_steps · n_envs / batch_size⌉`` minibatch steps (an epoch cut short by ``target_kl``
    still counts in full).
    """
    updates = int(getattr(model, "_n_updates", 0))
    buffer = getattr(model, "rollout_buffer", None)
    batch_size = getattr(model, "batch_size", None)
    if getattr(model, "n_epochs", None) is not None and buffer is not None and batch_size:
        per_epoch = -(-buffer.buffer_size * buffer.n_envs // batch_size)
        return updates * per_epoch
    return updates


@contextlib.contextmanager
def _sandbox(th: Any) -> Iterator[None]:
    """One torch thread, and the global random states restored afterwards (SB3 reseeds them)."""
    threads = th.get_num_threads()
    states = random.getstate(), np.random.get_state(), th.get_rng_state()
    th.set_num_threads(1)
    try:
        yield
    finally:
        th.set_num_threads(threads)
        random.setstate(states[0])
        np.random.set_state(states[1])
        th.set_rng_state(states[2])
