"""`BilevelProblem`: the contract every contextual bilevel RL application implements.

A leader picks ``x`` in ``x_space``; nature draws a context ``ξ`` from a finite distribution;
``(x, ξ)`` configure the follower's MDP ``M_{x,ξ}``. A problem provides:

* the follower MDP as an ordinary Gymnasium env (:meth:`BilevelProblem.follower_env`),
* batched per-transition terms the estimators consume (rewards and their derivatives in ``x``),
* for finite problems, the exact :class:`~bilevel_envs.tabular.TabularModel`.

Conventions: every array of transitions has a leading batch axis ``N``; gradients have a trailing
axis ``d = x.size``. The ``grad_*`` methods accept optional per-transition ``weights`` and then
return the contraction ``Σ_n weights[n] · grad[n]`` (shape ``(d,)``) — a vector-Jacobian product
that problems can compute far faster than materialising the ``(N, d)`` array.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import math
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from bilevel_envs.rollouts import Rollouts, TrajectorySampler
from bilevel_envs.tabular import TabularModel


def weighted_sum(grads: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    """The ``grad_*`` convention: ``grads`` ``(N, d)`` unchanged, or ``Σ_n weights[n] grads[n]``
    (shape ``(d,)``) if ``weights`` are given."""
    if weights is None:
        return grads
    return np.asarray(weights, dtype=np.float64) @ grads


class BilevelProblem(abc.ABC):
    """A contextual bilevel RL problem (CB-RL, paper §2): leader x, contexts ξ, follower MDPs.

    Subclasses set the attributes below in ``__init__`` and implement the abstract methods.

    Attributes:
        x_space: the leader's feasible set ``X`` as a ``Box`` in natural units.
        lam: the follower's entropy-regularisation weight λ > 0.
        gamma: the follower's discount factor.
        leader_gamma: the leader's discount factor (decomposable objective, paper Eq. 7).
        follower_action_space: ``Discrete(n_actions)``; followers' policies are probability tables.
        follower_observation_space: the observation space of :meth:`follower_env`.
        max_episode_steps: time limit of the Gymnasium follower env (``None``: no limit). Exact
            tabular quantities always describe the infinite-horizon MDP.
        context_values: the support of ``P_ξ``; ``context_probs`` its probabilities.
    """

    x_space: spaces.Box
    lam: float
    gamma: float
    leader_gamma: float
    follower_action_space: spaces.Discrete
    follower_observation_space: spaces.Space
    max_episode_steps: int | None = None
    #: Every follower episode terminates within this many steps (finite-horizon problems, e.g.
    #: RLHF's time-augmented MDP), or ``None``. Paper Alg. 2 restarts stop there.
    episode_length_bound: int | None = None
    context_values: tuple[Hashable, ...]
    context_probs: np.ndarray
    #: ``True`` when ``P_{x,ξ}`` (resp. ``μ_{x,ξ}``) depends on ``x``; estimators skip the score
    #: terms otherwise.
    transitions_depend_on_x: bool = False
    initial_depends_on_x: bool = False
    #: ``False`` when ``J`` is not a discounted sum of per-transition leader rewards (e.g. RLHF's
    #: trajectory-level likelihood). Such a problem overrides :meth:`estimate_objective` and, if
    #: tabular, provides ``exact_objective(x)`` and ``exact_hypergradient(x)`` methods, to which
    #: :func:`bilevel_envs.tabular.exact_objective` / ``exact_hypergradient`` dispatch. HPGD
    #: estimates its hypergradient when it also implements :class:`PairwiseObjective`.
    decomposable: bool = True

    # ------------------------------------------------------------------ parameters x
    @property
    def n_params(self) -> int:
        """Dimension ``d`` of ``x``."""
        return math.prod(self.x_space.shape)

    @property
    @abc.abstractmethod
    def x_init(self) -> np.ndarray:
        """The deterministic default starting point of a leader."""

    def sample_x_init(self, rng: np.random.Generator) -> np.ndarray:
        """A leader's (possibly randomised) starting point; defaults to :attr:`x_init`."""
        return np.array(self.x_init, dtype=np.float64)

    def check_x(self, x: Any, name: str = "x") -> np.ndarray:
        """Validate ``x`` and return it as a fresh float64 array.

        Raises:
            ValueError: naming ``name``, the expected shape and the bounds, if ``x`` has the wrong
                shape or dtype, contains NaN/inf, or lies outside ``x_space``.
        """
        shape = self.x_space.shape
        low, high = self.x_space.low, self.x_space.high
        if isinstance(x, np.ndarray) and x.dtype == np.float64 and x.shape == shape:
            # Fast path for the common case (a leader's own iterate): one pass over x.
            if np.all((x >= low) & (x <= high)):  # False for NaN
                return x.copy()
        bounds = _describe_bounds(low, high)
        try:
            arr = np.asarray(x)
        except (ValueError, TypeError) as exc:  # ragged sequences
            raise ValueError(f"{name} must be a real array of shape {shape}; got {x!r}") from exc
        if arr.dtype.kind not in "iuf":
            raise ValueError(
                f"{name} must be a real array of shape {shape} with entries in {bounds}; "
                f"got dtype {arr.dtype}"
            )
        if arr.shape != shape:
            raise ValueError(
                f"{name} must have shape {shape} (entries in {bounds}); got shape {arr.shape}"
            )
        arr = arr.astype(np.float64, copy=True)
        finite = np.isfinite(arr)
        if not finite.all():
            bad = np.flatnonzero(~finite.ravel())[:5].tolist()
            raise ValueError(f"{name} must be finite; NaN or inf at flat indices {bad}")
        outside = (arr < low) | (arr > high)
        if outside.any():
            i = int(np.flatnonzero(outside.ravel())[0])
            raise ValueError(
                f"{name} is outside x_space: {name}[{i}] = {arr.ravel()[i]:.6g} is not in "
                f"[{low.ravel()[i]:.6g}, {high.ravel()[i]:.6g}] ({int(outside.sum())} entries out "
                f"of bounds; x_space has shape {shape} and bounds {bounds})"
            )
        return arr

    # ------------------------------------------------------------------ contexts ξ
    @property
    def contexts(self) -> tuple[tuple[Hashable, ...], np.ndarray]:
        """``(values, probs)``: the finite support of ``P_ξ`` and its probabilities."""
        return self.context_values, self.context_probs

    @property
    def n_contexts(self) -> int:
        return len(self.context_values)

    def sample_context(self, rng: np.random.Generator) -> int:
        """Draw a context index from ``P_ξ``.

        The draw of ``rng.choice(n_contexts, p=context_probs)`` (one uniform through the
        normalised CDF, the same number from the same stream) without its per-call checks;
        probabilities ``rng.choice`` would refuse go to it for its error message."""
        p = self.context_probs
        if (isinstance(p, np.ndarray) and p.shape == (self.n_contexts,)
                and p.dtype == np.float64 and (p >= 0).all() and abs(p.sum() - 1.0) <= 1e-8):
            cdf = p.cumsum()
            cdf /= cdf[-1]
            return int(cdf.searchsorted(rng.random(), side="right"))
        return int(rng.choice(self.n_contexts, p=p))

    def context_index(self, context: Any) -> int:
        """Map a context (an index ``0..n-1`` or one of :attr:`context_values`) to its index.

        Raises:
            KeyError: listing the known contexts, for anything else.
        """
        if isinstance(context, (int, np.integer)) and not isinstance(context, bool):
            if 0 <= int(context) < self.n_contexts:
                return int(context)
        else:
            key = tuple(context) if isinstance(context, (list, np.ndarray)) else context
            for i, value in enumerate(self.context_values):
                if _same_context(key, value):
                    return i
        raise KeyError(
            f"unknown context {context!r}; expected an index in 0..{self.n_contexts - 1} or one of "
            f"{list(self.context_values)}"
        )

    # ------------------------------------------------------------------ the follower MDP
    #: Registered id of the follower's Gymnasium env (kwargs ``x``, ``context`` and ``problem``);
    #: the default :meth:`follower_env` makes it through the registry, so a problem module never
    #: imports its env classes (they import the problem).
    follower_env_id: str | None = None

    def follower_env(self, x: np.ndarray, context: Any, **kwargs: Any) -> gym.Env:
        """The follower's MDP ``M_{x,ξ}`` as a Gymnasium env (time limit applied).

        Default: ``gym.make(follower_env_id, x=x, context=ξ, problem=self)`` with the problem's
        ``max_episode_steps``. Problems without a registered follower env override this method.
        """
        if self.follower_env_id is None:
            raise TypeError(f"{type(self).__name__} defines no follower env: set follower_env_id "
                            "to a registered id or override follower_env(x, context)")
        limit = {} if self.max_episode_steps is None else {
            "max_episode_steps": self.max_episode_steps}
        return gym.make(self.follower_env_id, x=self.check_x(x),
                        context=self.context_index(context), problem=self,
                        disable_env_checker=True, **limit, **kwargs)

    def tabular(self, x: np.ndarray, context: Any) -> TabularModel | None:
        """The exact finite model of ``M_{x,ξ}`` with derivatives, or ``None`` if not finite."""
        return None

    def tabular_models(self, x: np.ndarray, contexts: list[int]) -> list[TabularModel]:
        """The models of several contexts at one ``x`` (the exact solver's request). Default: one
        :meth:`tabular` call each; problems whose contexts share expensive parts (tax design:
        the transition law) override it to build those once."""
        return [self.tabular(x, c) for c in contexts]

    @property
    def is_tabular(self) -> bool:
        """Whether :meth:`tabular` returns a model (finite states and actions)."""
        return False

    def tabular_twin(self) -> BilevelProblem | None:
        """A tabular problem whose exact model stands for this problem's follower MDP, used to
        measure followers exactly (:mod:`bilevel_envs.follower_quality`): the problem itself
        when it is tabular (default), ``None`` when there is none; problems with a finite
        approximation override it (tax design: its asset grid)."""
        return self if self.is_tabular else None

    def twin_observations(self, twin: BilevelProblem) -> np.ndarray:
        """This problem's follower observation of every state of :meth:`tabular_twin`, in state
        order (what a follower's policy is queried with). Default: the state indices."""
        return np.arange(twin.follower_observation_space.n)

    def twin_states(self, twin: BilevelProblem, obs: Any) -> np.ndarray:
        """The state of :meth:`tabular_twin` of each follower observation in the batch ``obs``
        of this problem (to count the follower's visits). Default: the observation itself."""
        return np.asarray(obs, dtype=np.int64).reshape(-1)

    def make_oracle(self, x: np.ndarray, context: Any, policy: Any,
                    **kwargs: Any) -> TrajectorySampler | None:
        """A problem-specific sampler of trajectories (e.g. a vectorised simulator), or ``None``.

        :func:`bilevel_envs.oracles.make_oracle` prefers it (``backend="auto"`` or
        ``"native"``) over the generic paths; ``None`` (the default) means "use the tabular fast
        path or the Gymnasium path".
        """
        return None

    # ------------------------------------------------------------------ state aggregation
    @property
    def n_observation_cells(self) -> int | None:
        """Number of cells of :meth:`observation_index`, or ``None`` if the problem has none.

        Batch estimators (HPGD's ``"every_visit"``) tabulate values per cell. Default: a
        ``Discrete`` follower observation space, each observation its own cell. Problems with
        continuous observations may override both methods to aggregate states (tax design: asset
        cells); the per-transition derivative terms still see the raw observations.
        """
        n = getattr(self.follower_observation_space, "n", None)
        return None if n is None else int(n)

    def observation_index(self, obs: Any) -> np.ndarray:
        """The cell (``int64``, in ``0..n_observation_cells − 1``) of each follower observation;
        the output has the batch shape of ``obs`` (the observation's own axes are dropped).

        Raises:
            ValueError: if the problem defines no cells (:attr:`n_observation_cells` is ``None``).
        """
        if self.n_observation_cells is None:
            raise ValueError(f"{type(self).__name__} has continuous follower observations and "
                             f"no state aggregation (observation_index / n_observation_cells)")
        return np.asarray(obs, dtype=np.int64)

    # ------------------------------------------------------------------ per-transition terms
    @abc.abstractmethod
    def follower_reward(self, x, context, obs, actions, next_obs) -> np.ndarray:
        """Follower reward ``r_{x,ξ}(s, a, s')`` for a batch of transitions, shape ``(N,)``."""

    @abc.abstractmethod
    def leader_reward(self, x, context, obs, actions, next_obs) -> np.ndarray:
        """Leader reward ``r̄_{x,ξ}(s, a, s')`` for a batch of transitions, shape ``(N,)``."""

    @abc.abstractmethod
    def grad_follower_reward(self, x, context, obs, actions, next_obs, weights=None) -> np.ndarray:
        """``∂x r_{x,ξ}(s, a, s')``: ``(N, d)``, or ``(d,)`` contracted with ``weights``."""

    @abc.abstractmethod
    def grad_leader_reward(self, x, context, obs, actions, next_obs, weights=None) -> np.ndarray:
        """``∂x r̄_{x,ξ}(s, a, s')``: ``(N, d)``, or ``(d,)`` contracted with ``weights``."""

    def grad_log_transition(self, x, context, obs, actions, next_obs, weights=None) -> np.ndarray:
        """``∂x log P_{x,ξ}(s' | s, a)``; zero unless :attr:`transitions_depend_on_x`."""
        return self._zero_grads(len(obs), weights)

    def grad_log_initial(self, x, context, obs, weights=None) -> np.ndarray:
        """``∂x log μ_{x,ξ}(s_0)``; zero unless :attr:`initial_depends_on_x`."""
        return self._zero_grads(len(obs), weights)

    # ------------------------------------------------------------------ the leader's objective
    def estimate_objective(self, x: np.ndarray, context: int, rollouts: Rollouts,
                           rng: np.random.Generator) -> float:
        """A Monte-Carlo estimate of ``J_ξ(x)`` from one follower's rollouts (the LeaderEnv reward).

        The default serves decomposable objectives: the mean discounted leader return of the
        finished episodes. ``rng`` is the leader env's generator, for estimators that sample.
        (A :class:`PairwiseObjective` is estimated from its trajectory pairs instead; other
        non-decomposable problems override this method.)
        """
        return float(rollouts.episode_returns(self.leader_gamma).mean())

    def _zero_grads(self, n: int, weights) -> np.ndarray:
        if weights is None:
            return np.zeros((n, self.n_params))
        return np.zeros(self.n_params)

    # ------------------------------------------------------------------ identity
    def fingerprint(self) -> str:
        """A short hash of what defines the problem: its class and every public attribute that is
        plain data (numbers, strings, arrays, spaces, dataclasses of those) — λ, γ, the context
        support and probabilities, the bounds of ``X``, an application's own parameters.
        Checkpoints record it so that a run is never resumed on a different problem."""
        digest = hashlib.sha256(type(self).__qualname__.encode())
        for name in sorted(vars(self)):
            if not name.startswith("_"):
                digest.update(name.encode())
                _digest_value(digest, getattr(self, name))
        return digest.hexdigest()[:16]

    # ------------------------------------------------------------------ display
    def context_name(self, context: Any) -> str:
        """A short human-readable label of a context (used in plots and logs)."""
        return str(self.context_values[self.context_index(context)])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(lam={self.lam}, gamma={self.gamma}, d={self.n_params})"


@dataclass(frozen=True)
class TrajectoryPairs:
    """The pairs of trajectories in one follower's rollouts (a pairwise objective's view of them).

    Attributes:
        traj0, traj1: ``N`` first and second trajectories of the pairs (opaque batches that only
            the problem reads).
        index: ``(n_envs, T)`` int, the pair each transition of the rollouts belongs to (``−1``
            outside every pair).
    """

    traj0: Any
    traj1: Any
    index: np.ndarray

    def __len__(self) -> int:
        return len(self.traj0)


@runtime_checkable
class PairwiseObjective(Protocol):
    """The trajectory-level objective ``J(x) = E_ξ E_{τ0, τ1 ~ π*_{x,ξ}} ℓ_ξ(τ0, τ1; x)`` of a
    non-decomposable problem (RLHF: ``ℓ`` is the Bradley–Terry log-likelihood of a labelled pair).

    What the leader env (its reward: the mean ``ℓ`` over the pairs of the rollouts) and HPGD's
    trajectory-level estimator (:func:`leaders.estimators.trajectory_estimate`) need from such a
    problem; ``traj0``/``traj1`` are opaque batches of ``N`` trajectories that only the problem
    reads.
    """

    def trajectory_pairs(self, rollouts: Rollouts) -> TrajectoryPairs:
        """The trajectory pairs held by one follower's ``rollouts`` (extracted once per step)."""
        ...

    def pair_objective(self, x: np.ndarray, context: Any, traj0: Any, traj1: Any) -> np.ndarray:
        """``ℓ_ξ(τ0, τ1; x)`` per pair, ``(N,)``."""
        ...

    def grad_pair_objective(self, x: np.ndarray, context: Any, traj0: Any, traj1: Any,
                            weights: np.ndarray | None = None) -> np.ndarray:
        """``∂_x ℓ_ξ`` at fixed trajectories: ``(N, d)``, or ``(d,)`` contracted with weights."""
        ...


def _digest_value(digest: Any, value: Any) -> None:
    """Feed a plain-data description of ``value`` into ``digest`` (objects of other kinds count
    by their type only)."""
    if isinstance(value, np.ndarray):
        digest.update(f"{value.dtype}{value.shape}".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    elif value is None or isinstance(value, (bool, int, float, str, np.generic)):
        digest.update(repr(value).encode())
    elif isinstance(value, (list, tuple)):
        digest.update(f"{type(value).__name__}{len(value)}".encode())
        for item in value:
            _digest_value(digest, item)
    elif isinstance(value, dict):
        for key in sorted(value, key=repr):
            digest.update(repr(key).encode())
            _digest_value(digest, value[key])
    elif isinstance(value, spaces.Space):
        digest.update(repr(value).encode())
        for bound in ("low", "high"):
            if hasattr(value, bound):
                _digest_value(digest, getattr(value, bound))
    elif dataclasses.is_dataclass(value):
        digest.update(type(value).__qualname__.encode())
        for field in dataclasses.fields(value):
            digest.update(field.name.encode())
            _digest_value(digest, getattr(value, field.name))
    else:
        digest.update(type(value).__qualname__.encode())


def _same_context(a: Any, b: Any) -> bool:
    try:
        return bool(np.all(np.asarray(a) == np.asarray(b))) and np.shape(a) == np.shape(b)
    except (ValueError, TypeError):
        return False


def _describe_bounds(low: np.ndarray, high: np.ndarray) -> str:
    lo, hi = np.unique(low), np.unique(high)
    if lo.size == 1 and hi.size == 1:
        return f"[{lo[0]:.6g}, {hi[0]:.6g}]"
    return f"[{low.tolist()}, {high.tolist()}]"
