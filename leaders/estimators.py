"""HPGD's hypergradient estimators, from follower trajectories only (never the tabular model).

Both estimate the decomposable hypergradient (paper Prop. 1, Eq. 8, written for maximisation)::

    dJ/dx = E_ξ E_{π*} Σ_t γ̄^t [ ∂A(s_t,a_t) Ā(s_t,a_t) / λ + ∂r̄_t
                                 + γ̄ ∂log P(s_{t+1}|s_t,a_t) V̄(s_{t+1}) ]
            + E[∂log μ(s_0) V̄(s_0)]

with ``∂Q(s,a) = E Σ_t γ^t [∂r_t + γ ∂log P_{t+1} V_λ(s_{t+1})]`` (Thm 2) and ``∂A = ∂Q − ∂V``.

* :func:`paper_estimate` — paper Alg. 5 with Alg. 2 inside: geometric horizons, √γ-weighted tails,
  restarts of the follower's oracle from ``(s_T, a_T)``. Unbiased.
* :func:`every_visit_estimate` — the authors' batch estimator (docs/reference.md §2.2): every-visit
  Monte-Carlo tables of ``∂Q``, ``∂V``, ``Q̄``, ``V̄`` from one on-policy batch. Slightly biased
  (tables and weights share the batch; returns cut at the batch end) but low variance. Tables
  live on the problem's observation cells (state aggregation for continuous observations);
  ``leave_one_out=True`` computes each visit's leader advantage from the other visits of its
  ``(s, a)``, removing the shared-sample bias that dominates with many actions (tax design).

Trajectory-level objectives (RLHF, ``problem.decomposable`` False, a
:class:`~bilevel_envs.problem.PairwiseObjective`) use the score-function form of Thm 1 instead:

* :func:`trajectory_estimate` — ``∂xℓ(τ0, τ1) + (ℓ − b) Σ_{τ ∈ {τ0, τ1}} Σ_t ∂Â(s_t, a_t)/λ``
  per pair, ``∂Â`` from Alg. 2 restarts, ``b`` a leave-one-out baseline. Unbiased.

Every estimate is a sum of scalar weights times per-transition derivative terms. The weights are
computed here, vectorised over samples; the contraction with ``∂r``, ``∂r̄``, ``∂log P`` and
``∂log μ`` is the problem's job (its ``grad_*`` methods with ``weights=``), so the ``(N, d)``
array of per-transition gradients is never formed in the training loop.

Each block of weights is labelled with the term of Eq. 8 it estimates (:data:`TERMS`), so every
estimate splits into components ``(term, kind)`` — the term and the derivative it contracts
(:data:`COMPONENTS`) — that can be checked one by one against their exact values
(:func:`bilevel_envs.hypergradient.hypergradient_terms`): ``total(term=..., kind=...)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from bilevel_envs._kernels import discounted_returns, every_visit_weights
from bilevel_envs.hypergradient import HYPERGRADIENT_COMPONENTS, HYPERGRADIENT_TERMS
from bilevel_envs.oracles import TrajectoryOracle
from bilevel_envs.problem import BilevelProblem, PairwiseObjective, TrajectoryPairs
from bilevel_envs.rollouts import Rollouts

ESTIMATORS = ("paper", "every_visit", "every_visit_loo", "trajectory")
#: the estimators of a decomposable J computed from the env's on-policy batch (no restarts)
BATCH_ESTIMATORS = ("every_visit", "every_visit_loo")

#: The terms of the hypergradient (paper Eq. 8; a trajectory-level objective's ``∂xℓ`` is its
#: ``"direct"`` term) and, as ``(term, kind)``, split by the derivative they contract (the
#: ``kind`` of a :class:`Part`); see :data:`bilevel_envs.hypergradient.HYPERGRADIENT_TERMS`.
TERMS = HYPERGRADIENT_TERMS
COMPONENTS = HYPERGRADIENT_COMPONENTS


# ---------------------------------------------------------------------------- contraction
class Part(NamedTuple):
    """One block of an estimate: ``Σ_n weights[n] · ∂kind(obs[n], actions[n], next_obs[n])``.

    ``segment`` (optional) says which sample each weight belongs to; ``terms`` splits the
    weights between the hypergradient's terms (:data:`TERMS`; the arrays sum to ``weights``).
    """

    kind: str
    obs: Any
    actions: Any
    next_obs: Any
    weights: np.ndarray
    segment: np.ndarray | None = None
    terms: Mapping[str, np.ndarray] | None = None

    def weights_of(self, term: str | None) -> np.ndarray | None:
        """The weights of ``term`` in this block (all of them for ``None``; ``None`` if the
        block has none of ``term``)."""
        if term is None:
            return self.weights
        return None if self.terms is None else self.terms.get(term)


@dataclass
class WeightedTerms:
    """Per-transition weights of the four derivative terms, optionally labelled by sample.

    ``kind`` is one of ``"follower_reward"``, ``"leader_reward"``, ``"log_transition"``,
    ``"log_initial"``; ``segment`` says which estimate (sample) each weight belongs to, ``term``
    which term of the hypergradient (:data:`TERMS`) it estimates.
    """

    problem: BilevelProblem
    x: np.ndarray
    context: int
    parts: list[Part] = field(default_factory=list)

    def add(self, kind: str, obs, actions, next_obs, weights, segment=None,
            term: str | Mapping[str, Any] | None = None) -> None:
        """Add the block ``Σ_n weights[n] · ∂kind(obs[n], actions[n], next_obs[n])``.

        Args:
            kind: the derivative: ``"follower_reward"``, ``"leader_reward"``,
                ``"log_transition"`` or ``"log_initial"`` (the last two are skipped when the
                problem's ``P``, resp. ``μ``, does not depend on ``x``).
            obs, actions, next_obs: the transitions (``(N, ...)``).
            weights: ``(N,)`` weights.
            segment: ``(N,)`` sample index of each weight (``None``: one sample).
            term: the term of :data:`TERMS` the weights estimate, or ``{term: weights}`` when
                one block serves several terms (their weights sum to ``weights``).
        """
        if kind == "log_transition" and not self.problem.transitions_depend_on_x:
            return
        if kind == "log_initial" and not self.problem.initial_depends_on_x:
            return
        weights = np.asarray(weights, dtype=np.float64)
        if isinstance(term, str):
            term = {term: weights}
        elif term is not None:
            term = {name: np.asarray(w, dtype=np.float64) for name, w in term.items()}
        if weights.size:
            self.parts.append(Part(kind, obs, actions, next_obs, weights, segment, term))

    @property
    def components(self) -> list[tuple[str, str]]:
        """The ``(term, kind)`` components present, in the order of :data:`COMPONENTS`."""
        present = {(t, p.kind) for p in self.parts for t in (p.terms or ())}
        return [c for c in COMPONENTS if c in present] + sorted(present - set(COMPONENTS))

    def _selected(self, term: str | None, kind: str | None):
        """``(part, weights)`` of the blocks of ``term`` and ``kind`` (``None``: any)."""
        for part in self.parts:
            if kind is not None and part.kind != kind:
                continue
            weights = part.weights_of(term)
            if weights is not None:
                yield part, weights

    def _call(self, kind, obs, actions, next_obs, weights=None):
        p, x, c = self.problem, self.x, self.context
        if kind == "follower_reward":
            return p.grad_follower_reward(x, c, obs, actions, next_obs, weights=weights)
        if kind == "leader_reward":
            return p.grad_leader_reward(x, c, obs, actions, next_obs, weights=weights)
        if kind == "log_transition":
            return p.grad_log_transition(x, c, obs, actions, next_obs, weights=weights)
        return p.grad_log_initial(x, c, obs, weights=weights)

    def total(self, term: str | None = None, kind: str | None = None) -> np.ndarray:
        """``Σ weights · ∂kind`` over everything added: a ``(d,)`` vector; with ``term`` and/or
        ``kind``, over that term's (:data:`TERMS`) and/or that derivative's weights only."""
        out = np.zeros(self.problem.n_params)
        for part, weights in self._selected(term, kind):
            out += self._call(part.kind, part.obs, part.actions, part.next_obs, weights=weights)
        return out

    def per_segment(self, n_segments: int, chunk: int = 50_000, term: str | None = None,
                    kind: str | None = None) -> np.ndarray:
        """``(n_segments, d)``: the contraction separately for each sample (for variance
        estimates and tests; materialises per-transition gradients in chunks); ``term`` and
        ``kind`` select as in :meth:`total`."""
        out = np.zeros((n_segments, self.problem.n_params))
        for part, weights in self._selected(term, kind):
            seg = (np.zeros(len(weights), np.int64) if part.segment is None
                   else np.asarray(part.segment))
            keep = weights != 0
            obs, actions, next_obs = part.obs[keep], part.actions[keep], part.next_obs[keep]
            weights, seg = weights[keep], seg[keep]
            for lo in range(0, len(weights), chunk):
                sl = slice(lo, lo + chunk)
                grads = self._call(part.kind, obs[sl], actions[sl], next_obs[sl])
                np.add.at(out, seg[sl], weights[sl, None] * grads)
        return out


def _masked(rollouts: Rollouts):
    """The mask and the valid transitions (flat views when every step is valid)."""
    m = rollouts.mask
    if m.all():
        m = slice(None)
        return m, rollouts.obs.ravel(), rollouts.actions.ravel(), rollouts.next_obs.ravel()
    return m, rollouts.obs[m], rollouts.actions[m], rollouts.next_obs[m]


# ---------------------------------------------------------------------------- Alg. 5 + Alg. 2
def _geometric(rng: np.random.Generator, discount: float, size: int) -> np.ndarray:
    """``T ~ Geo(1 − discount)`` on {0, 1, ...}: ``P(T ≥ t) = discount^t``."""
    return rng.geometric(1.0 - discount, size=size) - 1


def _advantage_gradient_terms(terms: WeightedTerms, oracle: TrajectoryOracle,
                              rng: np.random.Generator, states, actions, coefficient, segment,
                              n_inner: int, lam: float, coupled: bool) -> None:
    """Add ``coefficient_m · ∂Â(s_m, a_m)`` (paper Alg. 2, averaged over ``n_inner`` pairs of
    restarts) to ``terms``: ``∂Q̂(s, a)`` from a rollout starting with ``(s, a)``, ``∂V̂(s)`` from
    one starting in ``s``; ``Σ_{t≤T} ∂r_t + γ/(1−γ) ∂log P(s_{T+1}|s_T,a_T) Σ γ^{k/2} (r + λH)``.

    ``coupled``: the ∂Q̂ and ∂V̂ rollouts of a pair share their horizons and random numbers
    (each is still distributed as in Alg. 2, so the difference stays unbiased); when the ∂V̂
    rollout happens to draw ``a`` the two coincide and the pair contributes exactly 0.
    """
    gamma, bound = oracle.problem.gamma, oracle.problem.episode_length_bound
    n = len(states)
    for _ in range(n_inner):
        state = rng.bit_generator.state
        for sign, first_actions in ((1.0, actions), (-1.0, np.full(n, -1))):
            if coupled and sign < 0:
                rng.bit_generator.state = state
            T = _geometric(rng, gamma, n)
            T_tail = _geometric(rng, np.sqrt(gamma), n)
            lengths = T + T_tail + 2
            if bound is not None:  # the episode has ended by then: nothing is cut
                lengths = np.minimum(lengths, bound)
            r = oracle.rollout(rng, n, int(lengths.max()), start_states=states,
                               start_actions=first_actions, lengths=lengths, auto_reset=False,
                               time_limit=False)
            t = np.arange(r.n_steps)[None, :]
            scale = (sign / n_inner) * coefficient[:, None]
            m, obs, act, nxt = _masked(r)
            seg = np.broadcast_to(segment[:, None], r.mask.shape)[m].ravel()
            terms.add("follower_reward", obs, act, nxt,
                      (np.broadcast_to(scale, r.mask.shape) * (t <= T[:, None]))[m].ravel(), seg,
                      term="best_response")
            if terms.problem.transitions_depend_on_x:
                soft = np.where(r.mask, r.rewards + lam * r.entropy, 0.0)
                tail = ((t > T[:, None]) * np.sqrt(gamma) ** (t - T[:, None] - 1) * soft).sum(1)
                at_T = (t == T[:, None]) & ~r.terminated
                w = scale * at_T * (gamma / (1 - gamma)) * tail[:, None]
                terms.add("log_transition", obs, act, nxt, w[m].ravel(), seg,
                          term="best_response")


def paper_estimate(problem: BilevelProblem, x: np.ndarray, context: int,
                   oracle: TrajectoryOracle, rng: np.random.Generator, n_samples: int,
                   n_inner: int = 1, coupled: bool = False) -> WeightedTerms:
    """Paper Alg. 5 (DecomposableGradientEstimator) with Alg. 2 for ``∂A``, ``n_samples`` times.

    For each sample: ``T ~ Geo(1−γ̄)``, ``T' ~ Geo(1−√γ̄)``; roll out ``s_0 ~ μ`` for ``T+T'+1``
    steps; ``Q̄̂ = Σ_{t=T}^{T+T'} γ̄^{(t−T)/2} r̄_t``; the estimate is

    ``Σ_{t≤T} ∂r̄_t + ∂Â(s_T,a_T) Q̄̂ / (λ(1−γ̄)) + ∂log P(s_T|s_{T−1},a_{T−1}) Q̄̂ / (1−γ̄)``

    (``∂log μ(s_0)`` in place of the transition score when ``T = 0``). Unbiased for ``dJ_ξ/dx``.

    ``coupled=True`` gives the ∂Q̂/∂V̂ restarts of Alg. 2 common random numbers (see
    :func:`_advantage_gradient_terms`): still unbiased, 3–5× less noise on Four-Rooms. (A leader
    baseline ``Q̄̂ − V̄̂(s_T)`` was measured too and did not reduce the variance there.)

    Returns the weighted terms; ``.total() / n_samples`` is the mean estimate and
    ``.per_segment(n_samples)`` the individual estimates.
    """
    lgamma, lam = problem.leader_gamma, problem.lam
    T = _geometric(rng, lgamma, n_samples)
    T_tail = _geometric(rng, np.sqrt(lgamma), n_samples)
    lengths = T + T_tail + 1
    r = oracle.rollout(rng, n_samples, int(lengths.max()), lengths=lengths, auto_reset=False,
                       time_limit=False)
    terms = WeightedTerms(problem, x, context)
    t = np.arange(r.n_steps)[None, :]
    sample = np.arange(n_samples)
    m, obs, act, nxt = _masked(r)
    seg = np.broadcast_to(sample[:, None], r.mask.shape)[m].ravel()

    # Direct term Σ_{t ≤ T} ∂r̄_t.
    terms.add("leader_reward", obs, act, nxt, (t <= T[:, None])[m].ravel().astype(float), seg,
              term="direct")
    # √γ̄-weighted tail: an unbiased estimate of Q̄(s_T, a_T) (and of V̄(s_T), a_T ~ π).
    leader = np.where(r.mask, r.leader_rewards, 0.0)
    q_tail = ((t >= T[:, None]) * np.sqrt(lgamma) ** np.maximum(t - T[:, None], 0) * leader).sum(1)
    reached = r.mask[sample, np.minimum(T, r.n_steps - 1)] & (T < lengths)
    # Score terms: the transition into s_T (or μ at T = 0), weighted by the tail return.
    w_score = np.where(reached, q_tail / (1 - lgamma), 0.0)
    into_T = (t == (T - 1)[:, None]) & ~r.terminated
    terms.add("log_transition", obs, act, nxt, (w_score[:, None] * into_T)[m].ravel(), seg,
              term="transition_score")
    first = r.obs[:, 0]
    at_start = reached & (T == 0)
    terms.add("log_initial", first[at_start], first[at_start], first[at_start],
              w_score[at_start], sample[at_start], term="initial_score")
    # Best-response term ∂Â(s_T, a_T) Q̄̂ / (λ (1 − γ̄)), ∂Â from restarts (Alg. 2).
    idx = np.flatnonzero(reached)
    if idx.size:
        s_T, a_T = r.obs[idx, T[idx]], r.actions[idx, T[idx]]
        coefficient = q_tail[idx] / (lam * (1 - lgamma))
        _advantage_gradient_terms(terms, oracle, rng, s_T, a_T, coefficient, idx, n_inner, lam,
                                  coupled)
    return terms


# ---------------------------------------------------------------------------- every-visit batch
def every_visit_estimate(problem: BilevelProblem, x: np.ndarray, context: int,
                         rollouts: Rollouts, leave_one_out: bool = False) -> WeightedTerms:
    """The authors' batch estimator (docs/reference.md §2.2, generalised to ∂log P and ∂log μ).

    From one on-policy batch (chains with auto-reset): every-visit tables ``Q̄̂(s,a)``, ``V̄̂(s)``
    of the leader's discounted returns and ``∂Q̂(s,a)``, ``∂V̂(s)`` of the follower's reward-
    derivative returns (returns stop at episode ends and at the batch end). Then, with
    ``N`` = number of episode ends in the batch and ``τ`` the time within the episode,

    ``ĝ = (1/N) Σ_k γ̄^τ_k (∂Q̂ − ∂V̂)(s_k,a_k) Ā_k / λ  +  mean over episode starts of ∂V̄̂(s_0)``

    (+ ``∂log μ(s_0) V̄̂(s_0)`` per start when ``μ`` depends on ``x``; the ``∂log P`` scores are
    weighted by ``V(s') − V(s)``: the current cell's value is a free baseline).

    ``leave_one_out``: ``Ā_k`` from the other visits of ``(s_k, a_k)`` (0 if there is none), so it
    is independent of visit ``k``'s own future, which its ``∂r`` return and its ``∂log P`` score
    also see (their covariance is the bias of the plain estimator, ``O(1/visits of (s, a))``).

    The tables live on the problem's observation cells (:meth:`~bilevel_envs.BilevelProblem.
    observation_index`): the states themselves for discrete observations, or a state aggregation
    for continuous ones (tax design: asset cells). Aggregation adds a bias — each table entry
    averages its cell's states, like the authors' value networks — but no variance; the
    derivative terms ``∂r``, ``∂r̄``, ``∂log P`` are still evaluated at the raw observations.
    """
    n_states = problem.n_observation_cells
    if n_states is None:
        raise ValueError("estimator='every_visit' needs a Discrete follower observation space or "
                         "a state aggregation (problem.n_observation_cells, observation_index); "
                         "use estimator='paper'")
    gamma, lgamma, lam = problem.gamma, problem.leader_gamma, problem.lam
    n_actions = problem.follower_action_space.n
    m, ends, obs = rollouts.mask, rollouts.ends, rollouts.obs
    cells = problem.observation_index(obs)
    next_cells = problem.observation_index(rollouts.next_obs)
    W, U, v_bar, n_starts = every_visit_weights(
        cells, rollouts.actions, m, ends, rollouts.leader_rewards.astype(np.float64, copy=False),
        rollouts.episode_step, n_states, n_actions, gamma, lgamma, lam, leave_one_out)

    terms = WeightedTerms(problem, x, context)
    valid, o, a, n = _masked(rollouts)
    terms.add("follower_reward", o, a, n, W[valid].ravel(), term="best_response")
    terms.add("leader_reward", o, a, n, U[valid].ravel(), term="direct")
    if problem.transitions_depend_on_x:
        soft = np.where(m, rollouts.rewards + lam * rollouts.entropy, 0.0)
        soft_returns = discounted_returns(soft, ends, gamma)
        n_s = np.maximum(np.bincount(cells[m], minlength=n_states), 1)
        v_soft = np.bincount(cells[m], weights=soft_returns[m], minlength=n_states) / n_s
        cont = ~rollouts.terminated
        # E[∂log P(s'|s, a) | s, a] = 0, so the values of the current cell are a free baseline:
        # V(s') − V(s) is small over one step, V(s') alone is not (tax design: about 2× less
        # income-tax noise at the authors' batch, docs/tax_design.md).
        w_follower = W * gamma * (v_soft[next_cells] - v_soft[cells])
        w_leader = U * lgamma * (v_bar[next_cells] - v_bar[cells])
        w_score = w_follower + w_leader
        terms.add("log_transition", o, a, n, np.where(cont, w_score, 0.0)[valid].ravel(),
                  term={"best_response": np.where(cont, w_follower, 0.0)[valid].ravel(),
                        "transition_score": np.where(cont, w_leader, 0.0)[valid].ravel()})
    if problem.initial_depends_on_x:
        starts = m & (rollouts.episode_step == 0)
        first = obs[starts]
        terms.add("log_initial", first, first, first, v_bar[cells[starts]] / n_starts,
                  term="initial_score")
    return terms


# ---------------------------------------------------------------------------- trajectory level
@dataclass
class TrajectoryTerms:
    """A trajectory-level estimate: ``Σ_k w_k ∂xℓ(τ0_k, τ1_k)`` (the problem's pair derivative)
    plus the score part as :class:`WeightedTerms` labelled by pair (``segment = k``)."""

    problem: BilevelProblem
    x: np.ndarray
    context: int
    traj0: object
    traj1: object
    scores: WeightedTerms

    @property
    def n_samples(self) -> int:
        """Number of pairs ``N``."""
        return len(self.traj0)

    def total(self, term: str | None = None, kind: str | None = None) -> np.ndarray:
        """The sum of the ``N`` per-pair estimates, ``(d,)``; with ``term``/``kind``, of one
        term only: ``"direct"`` (``∂xℓ``, kind ``"pair_objective"``) or ``"best_response"``
        (the score part, kind ``"follower_reward"``)."""
        if term is None and kind is None:
            direct = self.problem.grad_pair_objective(self.x, self.context, self.traj0,
                                                      self.traj1, weights=np.ones(self.n_samples))
            return direct + self.scores.total()
        if self._is_direct(term, kind):
            return self.problem.grad_pair_objective(self.x, self.context, self.traj0,
                                                    self.traj1, weights=np.ones(self.n_samples))
        return self.scores.total(term, kind)

    def per_segment(self, term: str | None = None, kind: str | None = None) -> np.ndarray:
        """``(N, d)``: the estimate of each pair (for variance estimates and tests); ``term`` and
        ``kind`` select as in :meth:`total`."""
        if term is None and kind is None:
            direct = self.problem.grad_pair_objective(self.x, self.context, self.traj0,
                                                      self.traj1)
            return direct + self.scores.per_segment(self.n_samples)
        if self._is_direct(term, kind):
            return self.problem.grad_pair_objective(self.x, self.context, self.traj0, self.traj1)
        return self.scores.per_segment(self.n_samples, term=term, kind=kind)

    @staticmethod
    def _is_direct(term: str | None, kind: str | None) -> bool:
        if (term, kind) in (("direct", None), ("direct", "pair_objective"),
                            (None, "pair_objective")):
            return True
        if term == "direct" or kind == "pair_objective":
            raise ValueError(f"the direct term of a trajectory estimate is kind "
                             f"'pair_objective'; got term={term!r}, kind={kind!r}")
        return False


def leave_one_out_baseline(values: np.ndarray) -> np.ndarray:
    """``b_k = mean_{j ≠ k} values_j`` (0 for a single value): independent of sample ``k``, so
    ``(ℓ_k − b_k) ∇log p(τ_k)`` keeps its mean."""
    n = values.size
    if n < 2:
        return np.zeros_like(values)
    return (values.sum() - values) / (n - 1)


def trajectory_estimate(problem: BilevelProblem, x: np.ndarray, context: int,
                        rollouts: Rollouts, oracle: TrajectoryOracle, rng: np.random.Generator,
                        n_inner: int = 1, coupled: bool = False, baseline: bool = True,
                        pairs: TrajectoryPairs | None = None) -> TrajectoryTerms:
    """The trajectory-level (score-function) hypergradient estimate of a pairwise objective.

    For ``J(x) = E_{τ0, τ1 ~ π*_x} ℓ(τ0, τ1; x)`` (paper App. B, RLHF) and
    ``p_x(τ) = μ(s_0) Π_t π*_x(a_t|s_t) P(s_{t+1}|s_t, a_t)`` with only ``π*_x`` depending on
    ``x`` (``∇ log π*_x = ∂A/λ``, paper Prop. 1), each pair ``k`` of the follower's rollouts gives

    ``ĝ_k = ∂xℓ_k + (ℓ_k − b_k) (Σ_t ∂Â(s⁰_t, a⁰_t) + Σ_t ∂Â(s¹_t, a¹_t)) / λ``

    with ``∂Â(s, a)`` from paper Alg. 2: a ∂Q̂ restart of the follower's ``oracle`` from
    ``(s, a)`` minus a ∂V̂ restart from ``s`` (``n_inner`` pairs averaged; ``coupled``: common
    random numbers, see :func:`_advantage_gradient_terms`). Each restart is unbiased given the
    trajectory and independent of ``ℓ``, and ``b_k`` (leave-one-out mean of ``ℓ``; 0 with
    ``baseline=False``) is independent of pair ``k``, so ``E ĝ_k = ∇J``. Nothing is read from
    the tabular model: the terms are the problem's ``∂xℓ`` and ``∂x r`` along sampled paths.
    (``x`` must enter the follower's reward only: ``∂x log P`` and ``∂x log μ`` would add score
    terms this estimator does not carry, so such problems are refused.)

    Args:
        problem: a :class:`~bilevel_envs.problem.PairwiseObjective` problem.
        x: the leader's parameter the follower responded to.
        context: the context of the follower that produced ``rollouts``.
        rollouts: its rollouts (holding at least one pair, see ``problem.trajectory_pairs``).
        oracle: its trajectory oracle (restarts from given ``(state, action)``).
        rng: the leader's generator (restarts).
        n_inner: Alg. 2 restart pairs averaged per ``∂Â``.
        coupled: common random numbers for each ∂Q̂/∂V̂ restart pair.
        baseline: subtract the leave-one-out baseline ``b_k`` (else ``b = 0``).
        pairs: ``problem.trajectory_pairs(rollouts)`` if the caller has it (the leader env's
            step record does); extracted here otherwise.

    Returns:
        :class:`TrajectoryTerms`; ``.total() / .n_samples`` is the mean estimate.
    """
    if problem.decomposable or not isinstance(problem, PairwiseObjective):
        raise ValueError(f"the trajectory estimator needs a non-decomposable problem with a "
                         f"pairwise objective (bilevel_envs.problem.PairwiseObjective); got "
                         f"{problem!r}")
    if problem.transitions_depend_on_x or problem.initial_depends_on_x:
        raise ValueError("the trajectory estimator covers problems where x enters the follower's "
                         "reward only (∇log p_x(τ) = Σ_t ∂A/λ); this one also moves P or μ")
    if pairs is None:
        pairs = problem.trajectory_pairs(rollouts)
    traj0, traj1, pair = pairs.traj0, pairs.traj1, pairs.index
    ell = problem.pair_objective(x, context, traj0, traj1)
    b = leave_one_out_baseline(ell) if baseline else np.zeros_like(ell)
    paired = pair >= 0
    segment = pair[paired]
    scores = WeightedTerms(problem, x, context)
    _advantage_gradient_terms(scores, oracle, rng, rollouts.obs[paired],
                              rollouts.actions[paired], (ell - b)[segment] / problem.lam,
                              segment, n_inner, problem.lam, coupled)
    return TrajectoryTerms(problem, x, context, traj0, traj1, scores)
