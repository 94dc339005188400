r"""RLHF as bilevel RL (paper App. B): fit a reward model to preferences over follower trajectories.

A tabular gridworld has a hidden true reward. The leader's ``x`` parametrises a reward model
``r_x(s, a) = φ(s, a)·x``; the follower plays the soft-optimal policy ``π*_x`` of ``r_x`` over a
finite horizon ``H``; pairs of its trajectories are labelled by a Bradley–Terry teacher (an
annotator, the context ξ) who compares true discounted returns; the leader maximises the expected
log-likelihood of the labels under its own Bradley–Terry model.

Objective (maximised). With ``R_x(τ) = Σ_{t<H} γ^t r_x(s_t, a_t)``, ``Δ_x = R_x(τ1) − R_x(τ0)``, the
teacher's probability ``q_ξ(τ0, τ1) = P(l = 1)`` of preferring ``τ1``
(:func:`teacher_label_prob`) and ``σ`` the logistic function,

    J(x) = E_ξ E_{τ0, τ1 ~ π*_x} E_{l ~ q_ξ}[(1 − l) log P_x(τ0 ≻ τ1) + l log P_x(τ1 ≻ τ0)]
         = E_ξ Σ_{τ0, τ1} p_x(τ0) p_x(τ1) ℓ_ξ(τ0, τ1; x),
    ℓ_ξ = (1 − q_ξ) log σ(−Δ_x) + q_ξ log σ(Δ_x).

``J`` is not a discounted sum of per-step leader rewards, so the decomposable machinery
(``leader_values``, ``ExactSolver``) does not apply; the problem has ``decomposable = False``.

Hypergradient (score-function form of paper Thm 1). ``p_x(τ) = μ(s_0) Π_t π*_{x,t}(a_t|s_t)
P(s_{t+1}|s_t, a_t)`` and only ``π*`` depends on ``x``, so by the product rule

    ∇J = E_ξ E_{τ0, τ1}[∂_x ℓ_ξ + ℓ_ξ (∇ log p_x(τ0) + ∇ log p_x(τ1))],
    ∂_x ℓ_ξ = (q_ξ − σ(Δ_x)) (Φ(τ1) − Φ(τ0)),   Φ(τ) = Σ_t γ^t φ(s_t, a_t),
    ∇ log p_x(τ) = Σ_t ∇ log π*_{x,t}(a_t|s_t) = Σ_t ∂_x A_t(s_t, a_t) / λ.

The last identity holds because ``π*_{x,t} = softmax(Q_t/λ)`` and, at the soft optimum, the total
derivative of ``Q_t`` equals ``∂_x Q_t`` at the fixed policy (envelope theorem; the finite-horizon
form of paper Thm 2), computed by the backward recursion

    ∂Q_t = φ + γ P ∂V_{t+1},   ∂V_t = Σ_a π_t ∂Q_t,   ∂V_H = 0,   ∂A_t = ∂Q_t − ∂V_t

(:func:`advantage_gradient`; :meth:`RLHFProblem.score_table` returns ``∂A/λ``, shape
``(H, S, A, d)``). A constant baseline ``b`` may replace ``ℓ`` by ``ℓ − b`` (``E[∇ log p] = 0``).
For small instances (``instance="tiny"``) :meth:`RLHFProblem.exact_objective` and
:meth:`~RLHFProblem.exact_hypergradient` enumerate all trajectory pairs.

The pure model logic (instances, the finite-horizon soft solver, Bradley–Terry teachers,
trajectory enumeration) lives in :mod:`bilevel_envs.envs.rlhf.model`; the Gymnasium envs in
:mod:`bilevel_envs.envs.rlhf.envs`.

Finite horizon as an MDP: the follower's state is ``s̃ = t·S + s`` (time-augmented), the episode
terminates after ``H`` steps. With this, :meth:`RLHFProblem.tabular` is an ordinary
:class:`~bilevel_envs.tabular.TabularModel`, so the generic followers, oracles (also paper Alg. 2
restarts from ``(s̃, a)``) and the Gymnasium env all apply unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from bilevel_envs.envs.gridworld import gridworld_transitions, layout_cells
from bilevel_envs.envs.rlhf.model import (
    DEFAULT_GAMMA,
    DEFAULT_X_MAX,
    DIRECTION_NAMES,
    INSTANCE_DEFS,
    INSTANCES,
    MAX_ENUMERATED_TRAJECTORIES,
    REWARD_MODELS,
    TrajectoryBatch,
    advantage_gradient,
    complete_episodes,
    enumerate_trajectories,
    enumerated_likelihood,
    expected_log_likelihood,
    make_annotators,
    return_scale,
    reward_features,
    sigmoid,
    soft_backward_induction,
    soft_policy_value,
    teacher_label_prob,
)
from bilevel_envs.problem import BilevelProblem, TrajectoryPairs
from bilevel_envs.rollouts import Rollouts
from bilevel_envs.tabular import TabularModel


class RLHFProblem(BilevelProblem):
    """RLHF as a contextual bilevel problem (paper App. B), with ``decomposable = False``.

    * ``x ∈ [−x_max, x_max]^d``: reward-model parameters, ``r_x(s, a) = φ(s, a)·x`` with
      ``reward_model="state_action"`` (``d = S·A``, ``x[s·A + a]``), ``"state"`` (``d = S``) or
      ``"features"`` (``φ`` = one-hot of the valued cell types + a "moves" indicator, or your
      ``features`` array ``(S, A, d)`` / ``(S, d)``).
    * Follower: ``π*_x``, the soft-optimal (λ) policy of ``E[Σ_{t<H} γ^t r_x(s_t, a_t)]``, a
      non-stationary policy — a stationary one on the time-augmented state ``s̃ = t·S + s``.
    * Contexts: annotators (Bradley–Terry teachers, :class:`Annotator`). ``"one"``: true reward
      ``r(s, a) = value(cell s) − 0.05·1{a moves}`` (goal ``G`` +1, lava ``L`` −1, ``a`` +0.5),
      rationality ``beta``, mistakes ``epsilon``. ``"two"`` adds an annotator who only values the
      alternative target (``G`` on grid/Four-Rooms, ``a`` on tiny) with ``beta/2`` and
      ``min(epsilon + 0.1, 0.5)``.
    * Leader objective: the expected BT log-likelihood (module docstring); per-transition leader
      rewards (``leader_reward``, rollouts) are the annotator's true rewards, for diagnostics.

    Args:
        instance: ``"grid"`` (4×4, 5 actions, H = 8), ``"four_rooms"`` (104 cells, 4 slippery
            actions, H = 10) or ``"tiny"`` (3-cell chain, 3 actions, H = 3: exact enumeration).
        trajectory_length: the horizon ``H`` of the follower and of the compared trajectories
            (instance default if None).
        lam: follower entropy weight λ > 0.
        gamma: discount inside the horizon, in (0, 1) (the exact layer needs γ < 1).
        reward_model: ``"state_action"``, ``"state"`` or ``"features"``.
        features: ``(S, A, d)`` or ``(S, d)`` features (with ``reward_model="features"``).
        annotators: ``"one"``, ``"two"`` or a sequence of :class:`Annotator`.
        annotator_probs: context probabilities (uniform by default).
        beta, epsilon: rationality and mistake probability of the preset annotators.
        normalise: divide true returns by ``Σ_{t<H} γ^t (max r − min r)`` before the teacher's
            comparison (makes β scale-free).
        x_max: bound of every parameter.
        move_prob: probability that a move happens (instance default if None).
    """

    is_tabular = True
    decomposable = False
    follower_env_id = "bilevel/PreferenceGrid-v0"

    def __init__(self, instance: str = "grid", trajectory_length: int | None = None,
                 lam: float = 0.1, gamma: float = DEFAULT_GAMMA,
                 reward_model: str = "state_action", features: np.ndarray | None = None,
                 annotators: Any = "one",
                 annotator_probs=None, beta: float = 1.0, epsilon: float = 0.0,
                 normalise: bool = False, x_max: float = DEFAULT_X_MAX,
                 move_prob: float | None = None):
        if instance not in INSTANCE_DEFS:
            raise ValueError(f"unknown instance {instance!r}; expected one of {INSTANCES}")
        spec = INSTANCE_DEFS[instance]
        H = spec.horizon if trajectory_length is None else trajectory_length
        move_prob = spec.move_prob if move_prob is None else move_prob
        if not (isinstance(H, (int, np.integer)) and not isinstance(H, bool) and H >= 1):
            raise ValueError(f"trajectory_length must be an integer >= 1; got {H!r}")
        if not (np.isfinite(lam) and lam > 0):
            raise ValueError(f"lam must be a positive number; got {lam!r}")
        if not 0.0 < gamma < 1.0:
            raise ValueError(f"gamma must be in (0, 1); got {gamma!r}")
        if not (np.isfinite(x_max) and x_max > 0):
            raise ValueError(f"x_max must be a positive number; got {x_max!r}")
        if not (np.isfinite(move_prob) and 0.0 < move_prob <= 1.0):
            raise ValueError(f"move_prob must be in (0, 1]; got {move_prob!r}")
        if reward_model not in REWARD_MODELS:
            raise ValueError(f"reward_model must be one of {REWARD_MODELS}; got {reward_model!r}")
        if features is not None and reward_model != "features":
            raise ValueError("features are used with reward_model='features' only")
        self.instance, self.trajectory_length, self.reward_model = instance, int(H), reward_model
        self.lam, self.x_max, self.move_prob = float(lam), float(x_max), float(move_prob)
        self.gamma = self.leader_gamma = float(gamma)
        self.normalise = bool(normalise)
        self.layout = spec.layout
        self.cells = layout_cells(spec.layout)
        self.cell_chars = np.array([spec.layout[r][c] for r, c in self.cells])
        self.moves = spec.moves
        self.action_names = tuple(DIRECTION_NAMES[m] for m in spec.moves)
        self.P = gridworld_transitions(spec.layout, spec.moves, spec.slip, move_prob)
        self.mu = (self.cell_chars == "S").astype(np.float64)
        S, A = self.P.shape[:2]
        self.features = reward_features(reward_model, spec, self.cell_chars, self.P.shape[1],
                                        features)
        self.annotators = make_annotators(annotators, spec, self.cell_chars, self.P.shape[1],
                                          beta, epsilon)
        self.return_scales = np.array([
            return_scale(a.reward, self.gamma, self.trajectory_length) if self.normalise else 1.0
            for a in self.annotators])
        for array in (self.P, self.mu, self.features):
            array.setflags(write=False)

        self.x_space = spaces.Box(-self.x_max, self.x_max, shape=(self.features.shape[-1],),
                                  dtype=np.float64)
        self.follower_action_space = spaces.Discrete(A)
        self.follower_observation_space = spaces.Discrete(self.trajectory_length * S)
        self.max_episode_steps = None  # episodes terminate after H steps
        self.episode_length_bound = self.trajectory_length
        self.context_values = tuple(a.name for a in self.annotators)
        n = len(self.annotators)
        probs = np.full(n, 1.0 / n) if annotator_probs is None else np.asarray(
            annotator_probs, dtype=np.float64)
        if probs.shape != (n,) or (probs < 0).any() or not np.isclose(probs.sum(), 1.0):
            raise ValueError(f"annotator_probs must be {n} non-negative numbers summing to 1; "
                             f"got {annotator_probs!r}")
        self.context_probs = probs
        self._augmented: dict[str, np.ndarray] = {}
        self._cache: dict = {}  # sampling tables of the time-augmented model
        self._true_optimum: dict[int, np.ndarray] = {}

    # ------------------------------------------------------------------ construction helpers
    @property
    def n_states(self) -> int:
        """Number of base states ``S`` (cells); the follower's states are ``H·S``."""
        return self.P.shape[0]

    @property
    def n_actions(self) -> int:
        return self.P.shape[1]

    @property
    def x_init(self) -> np.ndarray:
        """The zero reward model (uniform follower)."""
        return np.zeros(self.n_params)

    # ------------------------------------------------------------------ the follower
    def reward(self, x: np.ndarray) -> np.ndarray:
        """The reward model ``r_x(s, a) = φ(s, a)·x``, shape ``(S, A)``."""
        return self.features @ x

    def solve(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The follower's exact soft optimum ``(q (H,S,A), v (H+1,S), pi (H,S,A))`` for ``r_x``
        (:func:`~bilevel_envs.envs.rlhf.model.soft_backward_induction`)."""
        return soft_backward_induction(self.P, self.reward(self.check_x(x)), self.gamma, self.lam,
                                       self.trajectory_length)

    def policy(self, x: np.ndarray) -> np.ndarray:
        """``π*_x`` per time step, ``(H, S, A)``; ``.reshape(H·S, A)`` indexes it by the follower
        env's observations."""
        return self.solve(x)[2]

    def score_table(self, x: np.ndarray, pi: np.ndarray | None = None) -> np.ndarray:
        """``∇_x log π*_{x,t}(a|s) = ∂_x A_t(s, a)/λ``, shape ``(H, S, A, d)`` (exact).

        ``pi``: ``π*_x`` if the caller has it (:meth:`policy`). ``.reshape(H·S, A, d)[obs,
        action]`` indexes the table with the follower env's observations.
        """
        pi = self.policy(x) if pi is None else pi
        return advantage_gradient(self.P, pi, self.features, self.gamma) / self.lam

    def tabular(self, x: np.ndarray, context: Any) -> TabularModel:
        """The time-augmented MDP: state ``t·S + s``, termination after ``H`` steps; follower
        reward ``r_x``; leader reward = the annotator's true reward (diagnostic only)."""
        x, ctx = self.check_x(x), self.context_index(context)
        P, mu, dr = self._augmented_model()
        H = self.trajectory_length
        return TabularModel(
            P=P, r=np.tile(self.reward(x), (H, 1)), mu=mu,
            r_leader=np.tile(self.annotators[ctx].reward, (H, 1)),
            gamma=self.gamma, leader_gamma=self.leader_gamma, dr=dr,
            dr_leader=np.broadcast_to(np.zeros(1), dr.shape), cache=self._cache)

    def _augmented_model(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not self._augmented:
            H, (S, A) = self.trajectory_length, self.P.shape[:2]
            P = np.zeros((H, S, A, H, S))
            for t in range(H - 1):
                P[t, :, :, t + 1] = self.P
            mu = np.zeros((H, S))
            mu[0] = self.mu
            dr = np.broadcast_to(self.features, (H,) + self.features.shape)
            self._augmented = {"P": P.reshape(H * S, A, H * S), "mu": mu.ravel(),
                               "dr": dr.reshape(H * S, A, -1)}
            for array in self._augmented.values():
                array.setflags(write=False)
        return self._augmented["P"], self._augmented["mu"], self._augmented["dr"]

    # ------------------------------------------------------------------ per-transition terms
    def follower_reward(self, x, context, obs, actions, next_obs) -> np.ndarray:
        return self.reward(x)[np.asarray(obs) % self.n_states, actions]

    def leader_reward(self, x, context, obs, actions, next_obs) -> np.ndarray:
        reward = self.annotators[self.context_index(context)].reward
        return reward[np.asarray(obs) % self.n_states, actions]

    def grad_follower_reward(self, x, context, obs, actions, next_obs, weights=None):
        states = np.asarray(obs) % self.n_states
        if weights is None:
            return self.features[states, actions]
        # Σ_n w_n φ(s_n, a_n) through the (S, A) table of summed weights: no (N, d) array.
        S, A = self.n_states, self.n_actions
        table = np.bincount(states * A + np.asarray(actions), minlength=S * A,
                            weights=np.asarray(weights, dtype=np.float64))
        return table @ self.features.reshape(S * A, -1)

    def grad_leader_reward(self, x, context, obs, actions, next_obs, weights=None):
        return self._zero_grads(len(obs), weights)

    # ------------------------------------------------------------------ trajectories and pairs
    def trajectories_from_rollouts(self, rollouts: Rollouts | dict) -> TrajectoryBatch:
        """The complete length-``H`` episodes of ``rollouts`` (in chain, then time order)."""
        if isinstance(rollouts, dict):
            rollouts = Rollouts.from_dict(rollouts)
        chain, cols = complete_episodes(rollouts, self.trajectory_length, self.n_states)
        return TrajectoryBatch(rollouts.obs[chain[:, None], cols] % self.n_states,
                               rollouts.actions[chain[:, None], cols])

    def trajectory_pairs(self, rollouts: Rollouts | dict) -> TrajectoryPairs:
        """The labelled pairs of ``rollouts``: consecutive complete length-``H`` episodes paired up,
        ``(τ_0, τ_1), (τ_2, τ_3), ...`` (in chain, then time order), and the ``(n_envs, T)``
        index of the pair each transition belongs to (``−1`` outside every pair). HPGD's
        trajectory estimator restarts the follower's oracle from the ``(obs, action)`` of every
        paired transition (:func:`leaders.estimators.trajectory_estimate`).

        Raises:
            ValueError: if the rollouts hold fewer than two complete episodes.
        """
        if isinstance(rollouts, dict):
            rollouts = Rollouts.from_dict(rollouts)
        chain, cols = complete_episodes(rollouts, self.trajectory_length, self.n_states)
        n = len(chain) // 2
        if n == 0:
            raise ValueError(f"the rollouts hold {len(chain)} complete episodes of "
                             f"{self.trajectory_length} steps; a pair needs two")
        traj = TrajectoryBatch(rollouts.obs[chain[:, None], cols] % self.n_states,
                               rollouts.actions[chain[:, None], cols])
        index = np.full(rollouts.mask.shape, -1, dtype=np.int64)
        index[chain[:2 * n, None], cols[:2 * n]] = (np.arange(2 * n) // 2)[:, None]
        return TrajectoryPairs(traj[0:2 * n:2], traj[1:2 * n:2], index)

    def _check_pair(self, traj0: TrajectoryBatch, traj1: TrajectoryBatch) -> None:
        shape = traj0.states.shape
        if not (shape == traj0.actions.shape == traj1.states.shape == traj1.actions.shape
                and len(shape) == 2 and shape[1] == self.trajectory_length):
            raise ValueError(f"trajectory pairs need states and actions of one shape (N, "
                             f"{self.trajectory_length}); got {traj0.states.shape}, "
                             f"{traj0.actions.shape}, {traj1.states.shape}, "
                             f"{traj1.actions.shape}")

    def true_returns(self, context: Any, traj: TrajectoryBatch) -> np.ndarray:
        """``Σ_t γ^t r_ξ(s_t, a_t)``: the annotator's true discounted returns, ``(N,)``."""
        return traj.discounted_sum(self.annotators[self.context_index(context)].reward,
                                   self.gamma)

    def label_probs(self, context: Any, traj0: TrajectoryBatch, traj1: TrajectoryBatch
                    ) -> np.ndarray:
        """The teacher's ``P(l = 1 | τ0, τ1)`` (``τ1`` preferred), ``(N,)``."""
        self._check_pair(traj0, traj1)
        ctx = self.context_index(context)
        a = self.annotators[ctx]
        return teacher_label_prob(self.true_returns(ctx, traj0), self.true_returns(ctx, traj1),
                                  a.beta, a.epsilon, self.return_scales[ctx])

    def sample_labels(self, context: Any, traj0: TrajectoryBatch, traj1: TrajectoryBatch,
                      rng: np.random.Generator) -> np.ndarray:
        """Labels ``l ∈ {0, 1}`` (1: ``τ1`` preferred) drawn from the teacher, ``(N,)`` int."""
        return (rng.random(len(traj0)) < self.label_probs(context, traj0, traj1)).astype(np.int64)

    def _delta(self, x: np.ndarray, traj0: TrajectoryBatch, traj1: TrajectoryBatch
               ) -> np.ndarray:
        """``Δ_x = R_x(τ1) − R_x(τ0)``, ``(N,)``."""
        r = self.reward(x)
        return traj1.discounted_sum(r, self.gamma) - traj0.discounted_sum(r, self.gamma)

    def _grad_delta(self, traj0: TrajectoryBatch, traj1: TrajectoryBatch, weights=None
                    ) -> np.ndarray:
        """``∂_x Δ_x = Φ(τ1) − Φ(τ0)``: ``(N, d)``, or ``(d,)`` contracted with ``weights``."""
        if weights is None:
            return (traj1.discounted_sum(self.features, self.gamma)
                    - traj0.discounted_sum(self.features, self.gamma))
        S, A = self.n_states, self.n_actions
        visits = (traj1.discounted_visits(S, A, self.gamma, weights)
                  - traj0.discounted_visits(S, A, self.gamma, weights))
        return np.einsum("sa,sad->d", visits, self.features)

    def pair_objective(self, x: np.ndarray, context: Any, traj0: TrajectoryBatch,
                       traj1: TrajectoryBatch) -> np.ndarray:
        """``ℓ_ξ(τ0, τ1; x)``: the BT log-likelihood averaged over the teacher's label, ``(N,)``."""
        x = self.check_x(x)
        q = self.label_probs(context, traj0, traj1)
        return expected_log_likelihood(self._delta(x, traj0, traj1), q)

    def grad_pair_objective(self, x: np.ndarray, context: Any, traj0: TrajectoryBatch,
                            traj1: TrajectoryBatch, weights=None) -> np.ndarray:
        """``∂_x ℓ_ξ = (q − σ(Δ_x)) (Φ(τ1) − Φ(τ0))`` at fixed trajectories: ``(N, d)``, or ``(d,)``
        contracted with ``weights``."""
        x = self.check_x(x)
        slope = self.label_probs(context, traj0, traj1) - sigmoid(self._delta(x, traj0, traj1))
        if weights is None:
            return slope[:, None] * self._grad_delta(traj0, traj1)
        return self._grad_delta(traj0, traj1, slope * np.asarray(weights, dtype=np.float64))

    def log_likelihood(self, x: np.ndarray, traj0: TrajectoryBatch, traj1: TrajectoryBatch,
                       labels: np.ndarray) -> np.ndarray:
        """``(1 − l) log P_x(τ0 ≻ τ1) + l log P_x(τ1 ≻ τ0)`` for given labels, ``(N,)``."""
        self._check_pair(traj0, traj1)
        return expected_log_likelihood(self._delta(self.check_x(x), traj0, traj1),
                                       np.asarray(labels, dtype=np.float64))

    def preference_accuracy(self, x: np.ndarray, context: Any, traj0: TrajectoryBatch,
                            traj1: TrajectoryBatch, labels: np.ndarray | None = None) -> float:
        """How often ``r_x`` prefers the preferred trajectory of a pair; a tie of ``r_x`` counts ½.

        With ``labels`` (1: ``τ1`` preferred): agreement with those labels, as a reward model is
        validated on held-out preferences. Without: agreement with the annotator's true-return
        order, over the pairs whose true returns differ (NaN if there are none).
        """
        self._check_pair(traj0, traj1)
        predicted = np.sign(self._delta(self.check_x(x), traj0, traj1))
        if labels is not None:
            preferred = 2.0 * np.asarray(labels, dtype=np.float64) - 1.0
        else:
            preferred = np.sign(self.true_returns(context, traj1)
                                - self.true_returns(context, traj0))
        decided = preferred != 0
        if not decided.any():
            return float("nan")
        score = np.where(predicted == 0, 0.5, (predicted == preferred).astype(np.float64))
        return float(score[decided].mean())

    def trajectory_score(self, x: np.ndarray, traj: TrajectoryBatch,
                         table: np.ndarray | None = None) -> np.ndarray:
        """``∇_x log p_x(τ) = Σ_t ∂_x A_t(s_t, a_t)/λ`` (exact), ``(N, d)``; ``table``:
        :meth:`score_table` at ``x`` if the caller has it."""
        table = self.score_table(x) if table is None else table
        return table[np.arange(self.trajectory_length), traj.states, traj.actions].sum(axis=1)

    def hypergradient_samples(self, x: np.ndarray, context: Any, traj0: TrajectoryBatch,
                              traj1: TrajectoryBatch, baseline: float = 0.0) -> np.ndarray:
        """Unbiased per-pair estimates of ``∇J_ξ`` for pairs drawn from ``π*_x``, ``(N, d)``:
        ``∂_x ℓ + (ℓ − b)(∇ log p_x(τ0) + ∇ log p_x(τ1))`` with the exact score."""
        ell = self.pair_objective(x, context, traj0, traj1) - baseline
        table = self.score_table(x)
        scores = self.trajectory_score(x, traj0, table) + self.trajectory_score(x, traj1, table)
        return self.grad_pair_objective(x, context, traj0, traj1) + ell[:, None] * scores

    # ------------------------------------------------------------------ exact quantities
    def exact_value_and_grad(self, x: np.ndarray, contexts=None,
                             max_trajectories: int = MAX_ENUMERATED_TRAJECTORIES,
                             block: int = 512) -> tuple[float, np.ndarray]:
        """``(J(x), ∇J(x))`` by enumerating every trajectory pair (small instances only).

        ``J = Σ_ξ w_ξ Σ_{i,j} p_i p_j ℓ_ξ(i, j)`` and, with ``W_ij = p_i p_j (q_ij − σ(Δ_ij))``,
        ``∇J = Σ_ξ w_ξ [Σ_ij W_ij (Φ_j − Φ_i) + Σ_i p_i score_i Σ_j p_j (ℓ_ij + ℓ_ji)]``.

        Args:
            x: reward-model parameters.
            contexts: annotators to include (renormalised weights); all by default.
            max_trajectories: enumeration limit (raises ``ValueError`` beyond it).
            block: rows of the pair matrices held in memory at once.
        """
        x = self.check_x(x)
        idx = (list(range(self.n_contexts)) if contexts is None
               else [self.context_index(c) for c in contexts])
        w = self.context_probs[idx] / self.context_probs[idx].sum()
        pi = self.policy(x)
        states, actions, p = enumerate_trajectories(self.P, self.mu, pi, max_trajectories)
        traj = TrajectoryBatch(states, actions)
        score = self.trajectory_score(x, traj, self.score_table(x, pi))
        value, grad = 0.0, np.zeros(self.n_params)
        for weight, ctx in zip(w, idx):
            v, g = enumerated_likelihood(x, traj, p, score, self.features, self.gamma,
                                         self.annotators[ctx], self.return_scales[ctx], block)
            value += weight * v
            grad += weight * g
        return value, grad

    def exact_objective(self, x: np.ndarray, contexts=None) -> float:
        """``J(x)`` by enumeration (see :meth:`exact_value_and_grad`)."""
        return self.exact_value_and_grad(x, contexts)[0]

    def exact_hypergradient(self, x: np.ndarray, contexts=None) -> np.ndarray:
        """``∇J(x)`` by enumeration (see :meth:`exact_value_and_grad`)."""
        return self.exact_value_and_grad(x, contexts)[1]

    def true_regret(self, x: np.ndarray, context: Any, policy: np.ndarray | None = None) -> float:
        """``V*_ξ − V^π_ξ ≥ 0`` from the start: the annotator's regularised true value (λ, γ,
        horizon ``H``) of its own soft-optimal policy minus that of ``π``.

        Args:
            x: the reward model; ``π = π*_x`` unless ``policy`` is given.
            context: the annotator.
            policy: ``(H, S, A)`` or ``(H·S, A)`` table of the policy to assess (e.g. a learning
                follower's response).
        """
        ctx = self.context_index(context)
        reward = self.annotators[ctx].reward
        if ctx not in self._true_optimum:
            _, v, _ = soft_backward_induction(self.P, reward, self.gamma, self.lam,
                                              self.trajectory_length)
            self._true_optimum[ctx] = v[0]
        shape = (self.trajectory_length, self.n_states, self.n_actions)
        pi = self.policy(x) if policy is None else np.asarray(policy, np.float64).reshape(shape)
        v_pi = soft_policy_value(self.P, pi, reward, self.gamma, self.lam)
        return float(self.mu @ (self._true_optimum[ctx] - v_pi))

    def __repr__(self) -> str:
        return (f"RLHFProblem(instance={self.instance!r}, trajectory_length="
                f"{self.trajectory_length}, lam={self.lam}, reward_model={self.reward_model!r}, "
                f"annotators={len(self.annotators)}, d={self.n_params})")


#: keyword arguments of :class:`RLHFProblem` (the leader env routes them to the problem).
PROBLEM_KWARGS = frozenset({"trajectory_length", "gamma", "reward_model", "features", "annotators",
                            "annotator_probs", "beta", "epsilon", "normalise", "x_max",
                            "move_prob"})
