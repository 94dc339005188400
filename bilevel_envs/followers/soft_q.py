"""Tabular soft Q-learning (paper Alg. 4), vectorised over parallel chains.

The learner only sees sampled transitions ``(s, a, r, s')``: the problem's exact model serves as
the simulator (sparse successor tables, :func:`~bilevel_envs.rollouts.sampling_tables`), never as
knowledge. Update of the visited pair (Alg. 4, line 8, with the ``− Q`` the pseudocode omits)::

    Q(s, a) ← Q(s, a) + α_n(s,a) · (r + γ λ logΣ_a' exp(Q(s', a')/λ) − Q(s, a))

with zero continuation when the episode terminates after ``(s, a)``. ``n_chains`` chains act
together: at every time step all chains choose actions and bootstrap from the same ``Q_t``, then
their updates are applied. One *step* below is one such time step (``n_chains`` updates);
``n_chains=1`` is Alg. 4 exactly.

The iterates of one run are available at any step counts (:meth:`SoftQLearning.learn_iterates`):
the policies ``π^{t1}, π^{tk}, π^{tk+1}`` that RT-Q (paper Alg. 8) asks for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numba as nb
import numpy as np

from bilevel_envs._kernels import first_above
from bilevel_envs.budget import Budget
from bilevel_envs.followers.base import Follower, FollowerResponse
from bilevel_envs.oracles import sampling_tables
from bilevel_envs.policies import TabularPolicy
from bilevel_envs.tabular import expected_next, soft_max_value, softmax_policy
from bilevel_envs.validation import check_choice, check_float, check_int

if TYPE_CHECKING:
    from bilevel_envs.problem import BilevelProblem
    from bilevel_envs.tabular import TabularModel

BEHAVIOURS = ("uniform", "epsilon_soft")
RESETS = ("mu", "uniform")
#: uniforms per chain and step: exploration coin, action, successor, reset state
_UNIFORMS = 4
#: time steps drawn per block are capped so one block of uniforms stays near 8 MB
_BLOCK_DRAWS = 1 << 20


@dataclass(frozen=True)
class SoftQState:
    """What a soft Q-learning run hands to the next one (its ``warm_start``).

    Attributes:
        q: ``(S, A)`` the Q-table.
        visits: ``(S, A)`` updates of each pair *in the run that produced* ``q``. A warm-started
            run resumes its step-size schedule from these counts, so the warm start weighs as
            much as one run's samples; counting only the last run keeps the step sizes from
            vanishing over many leader steps (the follower must keep tracking a moving ``x``).
    """

    q: np.ndarray
    visits: np.ndarray


class SoftQLearning(Follower):
    """Soft Q-learning (paper Alg. 4) on a tabular problem, ``n_chains`` chains in parallel.

    Step sizes follow the visit count ``n`` of the updated pair (its number of earlier updates
    in this call): ``α_n = learning_rate · (t0 / (t0 + n)) ** lr_power``. The default
    (``lr_power = 1``, ``t0 = 1/(1 − γ)``) is the rescaled linear schedule ``h/(n + t0)`` of the
    paper's convergence proof (Prop. 6, which needs ``h ≳ 1/(1 − γ)``); ``lr_power = 0`` is a
    constant step, ``lr_power`` in ``(0.5, 1)`` a polynomial one. A warm start from a
    :class:`SoftQState` resumes the counts of the run that produced it; a bare Q-table (e.g. soft
    value iteration's) starts them at zero.

    Args:
        n_steps: time steps per :meth:`respond` (each updates ``n_chains`` entries of Q).
        n_chains: parallel chains (independent episodes sharing one Q-table).
        behaviour: ``"uniform"`` (actions uniformly at random) or ``"epsilon_soft"``
            (``(1 − ε) softmax(Q_t(s)/λ) + ε uniform``, the current Boltzmann policy made soft).
        epsilon: weight ``ε`` of the uniform part of ``"epsilon_soft"``, in ``[0, 1]``.
        learning_rate: step size of a pair's first update, in ``(0, 1]``.
        lr_t0: visit-count offset ``t0 > 0`` of the schedule; ``None``: ``1/(1 − γ)``.
        lr_power: decay exponent ``ω ≥ 0`` of the schedule.
        reset: where chains start and restart after an episode ends: ``"uniform"`` over states
            (exploring starts, the simulator's privilege: every pair keeps being visited) or
            ``"mu"`` (the problem's initial distribution, as in the follower's Gymnasium env).
        max_episode_steps: restart a chain after this many steps without termination (a
            truncation: the update still bootstraps). ``None``: the problem's time limit (its
            Gymnasium env's); ``0``: never.

    The response's ``warm_start`` is a :class:`SoftQState`; a plain ``(S, A)`` Q-table (e.g.
    soft value iteration's ``warm_start``) can warm-start a call too.

    Budget (:attr:`~bilevel_envs.followers.FollowerResponse.cost`): ``n_steps × n_chains``
    transitions sampled and as many Q-table updates per response.
    """

    name = "soft_q"

    def __init__(self, n_steps: int = 20_000, n_chains: int = 16, behaviour: str = "uniform",
                 epsilon: float = 0.1, learning_rate: float = 1.0, lr_t0: float | None = None,
                 lr_power: float = 1.0, reset: str = "uniform",
                 max_episode_steps: int | None = None):
        self.n_steps = check_int("n_steps", n_steps, 1)
        self.n_chains = check_int("n_chains", n_chains, 1)
        self.max_episode_steps = (None if max_episode_steps is None
                                  else check_int("max_episode_steps", max_episode_steps, 0))
        self.behaviour = check_choice("behaviour", behaviour, BEHAVIOURS)
        self.reset = check_choice("reset", reset, RESETS)
        self.epsilon = check_float("epsilon", epsilon, 0.0, 1.0)
        self.learning_rate = check_float("learning_rate", learning_rate, 0.0, 1.0, low_open=True)
        self.lr_t0 = None if lr_t0 is None else check_float("lr_t0 (or None)", lr_t0, 0.0,
                                                            low_open=True)
        self.lr_power = check_float("lr_power", lr_power, 0.0)

    def supports(self, problem: BilevelProblem) -> bool:
        return problem.is_tabular

    # ------------------------------------------------------------------ the follower API
    def respond(self, problem, x, context, seed=None, warm_start=None) -> FollowerResponse:
        """Run :attr:`n_steps` steps of soft Q-learning in ``M_{x,ξ}``.

        ``stats``: ``steps``, ``updates`` (``steps · n_chains``), ``episodes`` (ended episodes),
        ``min_visits`` (fewest updates of any pair in this call), ``q_change``
        (``‖Q_T − Q_{T−w}‖∞`` over the last ``w = max(1, ⌊T/10⌋)`` steps: the learner's own
        convergence signal) and ``bellman_residual`` (``‖T Q − Q‖∞`` on the exact model: a
        diagnostic only).
        """
        window = max(1, self.n_steps // 10)
        before, final = self.learn_iterates(problem, x, context,
                                            [self.n_steps - window, self.n_steps],
                                            seed=seed, warm_start=warm_start)
        final.stats["q_change"] = float(np.max(np.abs(final.warm_start.q - before.warm_start.q)))
        return final

    def learn_iterates(self, problem: BilevelProblem, x: np.ndarray, context: Any,
                       steps: Sequence[int], seed: int | None = None,
                       warm_start: SoftQState | np.ndarray | None = None,
                       model: TabularModel | None = None) -> list[FollowerResponse]:
        """The iterates of *one* run of soft Q-learning at the requested step counts.

        The run is the same whatever ``steps`` asks for (the random stream is consumed in time
        order), so ``learn_iterates(..., [t1, tk, tk1], seed)[1]`` equals
        ``learn_iterates(..., [tk], seed)[0]`` bit for bit: RT-Q (paper Alg. 8) gets ``π^{t1}``,
        ``π^{tk}`` and ``π^{tk+1}`` from a single run of ``tk+1`` steps.

        Args:
            problem: a tabular problem.
            x: the leader's parameter.
            context: the context.
            steps: non-decreasing step counts ``≥ 0`` (``0`` is the initial Q).
            seed: seed of the run.
            warm_start: a :class:`SoftQState` (Q-table and visit counts to resume from) or a
                Q-table ``(S, A)``; zeros if None.
            model: the tabular model of ``M_{x,ξ}`` (the simulator) if the caller has it;
                ``problem.tabular(x, context)`` if None.

        Returns:
            One :class:`~bilevel_envs.followers.FollowerResponse` per entry of ``steps``: the
            Boltzmann policy ``softmax(Q_t/λ)``, ``SoftQState(Q_t, visits)`` as ``warm_start``
            and stats (see :meth:`respond`).
        """
        if not problem.is_tabular:
            raise ValueError(f"follower 'soft_q' needs a tabular problem; {problem!r} has no "
                             "tabular model (use 'soft_dqn' or 'sb3')")
        checkpoints = _check_steps(steps)
        x = problem.check_x(x)
        model = problem.tabular(x, context) if model is None else model
        S, A = model.n_states, model.n_actions
        lam = problem.lam
        next_states, next_cdf, mu_cdf = sampling_tables(model)
        r_next, r_end = transition_rewards(problem, x, context, next_states)
        reset_cdf = mu_cdf if self.reset == "mu" else np.arange(1, S + 1) / S
        limit = problem.max_episode_steps if self.max_episode_steps is None \
            else self.max_episode_steps
        t0 = 1.0 / (1.0 - model.gamma) if self.lr_t0 is None else self.lr_t0

        q, visits = _initial_state(warm_start, S, A)
        counts = visits.copy()
        rng = np.random.default_rng(seed)
        states = np.minimum(np.searchsorted(reset_cdf, rng.random(self.n_chains), side="right"),
                            S - 1).astype(np.int64)
        taus = np.zeros(self.n_chains, dtype=np.int64)
        block = max(1, _BLOCK_DRAWS // (self.n_chains * _UNIFORMS))

        responses, t, episodes = [], 0, 0
        for target in checkpoints:
            while t < target:
                n = min(block, target - t)
                u = rng.random((n, self.n_chains, _UNIFORMS))
                episodes += soft_q_steps(
                    q, counts, states, taus, next_states, next_cdf, r_next, r_end, reset_cdf,
                    model.gamma, lam, self.behaviour == "uniform", self.epsilon,
                    self.learning_rate, t0, self.lr_power, int(limit or 0), u)
                t += n
            residual = np.max(np.abs(model.r + model.gamma * expected_next(
                model.P, soft_max_value(q, lam)) - q))
            state = SoftQState(q=q.copy(), visits=counts - visits)
            stats = {"steps": t, "updates": t * self.n_chains, "episodes": int(episodes),
                     "min_visits": int(state.visits.min()), "bellman_residual": float(residual)}
            # Budget: every chain samples one transition and makes one update per step.
            updates = t * self.n_chains
            responses.append(FollowerResponse(policy=TabularPolicy(softmax_policy(q, lam)),
                                              warm_start=state, stats=stats, model=model,
                                              cost=Budget(transitions=updates,
                                                          follower_updates=updates)))
        return responses

    def __repr__(self) -> str:
        return (f"SoftQLearning(n_steps={self.n_steps}, n_chains={self.n_chains}, "
                f"behaviour={self.behaviour!r}, learning_rate={self.learning_rate:g}, "
                f"lr_t0={self.lr_t0}, lr_power={self.lr_power:g}, reset={self.reset!r})")


# ---------------------------------------------------------------------------- helpers
def transition_rewards(problem: BilevelProblem, x: np.ndarray, context: Any,
                       next_states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Follower rewards of every sampleable transition, from the problem's per-transition reward.

    Returns ``r_next[s, a, k] = r(s, a, next_states[s, a, k])`` and, for an episode that ends
    after ``(s, a)`` (``next_obs`` repeats ``obs``, as in the rollouts),
    ``r_end[s, a] = r(s, a, s)``.
    """
    S, A, K = next_states.shape
    s, a, _ = np.meshgrid(np.arange(S), np.arange(A), np.arange(K), indexing="ij")
    r_next = problem.follower_reward(x, context, s.ravel(), a.ravel(), next_states.ravel())
    s, a = s[..., 0].ravel(), a[..., 0].ravel()
    r_end = problem.follower_reward(x, context, s, a, s)
    return (np.ascontiguousarray(r_next, dtype=np.float64).reshape(S, A, K),
            np.ascontiguousarray(r_end, dtype=np.float64).reshape(S, A))


def _check_steps(steps: Sequence[int]) -> list[int]:
    values = [check_int("steps", value, 0) for value in steps]
    if not values or any(b < a for a, b in zip(values, values[1:])):
        raise ValueError(f"steps must be a non-empty non-decreasing sequence of integers >= 0; "
                         f"got {values!r}")
    return values


def _initial_state(warm_start: Any, n_states: int, n_actions: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Fresh ``(q, visits)`` arrays from a warm start (``None``, a state or a Q-table)."""
    shape = (n_states, n_actions)
    if warm_start is None:
        return np.zeros(shape), np.zeros(shape, dtype=np.int64)
    if isinstance(warm_start, SoftQState):
        q, visits = warm_start.q, warm_start.visits
    else:
        q, visits = warm_start, np.zeros(shape, dtype=np.int64)
    q = np.array(q, dtype=np.float64)
    visits = np.array(visits, dtype=np.int64)
    if q.shape != shape or visits.shape != shape or not np.all(np.isfinite(q)) \
            or (visits < 0).any():
        raise ValueError(f"warm_start must be a SoftQState or a finite Q-table of shape {shape}; "
                         f"got Q of shape {q.shape}")
    return q, visits


# ---------------------------------------------------------------------------- the hot loop
@nb.njit(cache=True, nogil=True)
def _soft_value(q_row, lam):
    """``λ logΣ exp(q_row/λ)``, stably."""
    m = q_row.max()
    total = 0.0
    for a in range(q_row.shape[0]):
        total += np.exp((q_row[a] - m) / lam)
    return m + lam * np.log(total)


@nb.njit(cache=True, nogil=True)
def _sample_boltzmann(q_row, lam, u):
    """Inverse-CDF draw from ``softmax(q_row/λ)`` with the uniform ``u``."""
    m = q_row.max()
    weights = np.exp((q_row - m) / lam)
    threshold = u * weights.sum()
    acc = 0.0
    for a in range(q_row.shape[0]):
        acc += weights[a]
        if threshold < acc:
            return a
    return q_row.shape[0] - 1


@nb.njit(cache=True, nogil=True)
def soft_q_steps(q, counts, states, taus, next_states, next_cdf, r_next, r_end, reset_cdf,
                 gamma, lam, uniform_behaviour, epsilon, lr, lr_t0, lr_power, max_episode_steps,
                 u):
    """Advance ``n_chains`` chains of soft Q-learning by ``len(u)`` time steps, in place.

    Args:
        q, counts: ``(S, A)`` Q-table and visit counts (updated).
        states, taus: ``(n_chains,)`` current states and steps into the episode (updated).
        next_states, next_cdf: ``(S, A, K)`` sparse successors and cumulative probabilities; a
            draw above the row total ends the episode (zero continuation).
        r_next, r_end: ``(S, A, K)`` rewards of the successors; ``(S, A)`` on termination.
        reset_cdf: ``(S,)`` cumulative distribution of (re)start states.
        gamma, lam: discount and entropy weight.
        uniform_behaviour: act uniformly; else ε-soft Boltzmann with weight ``epsilon``.
        lr, lr_t0, lr_power: step size ``lr (lr_t0 / (lr_t0 + n))^lr_power`` at visit count n.
        max_episode_steps: truncate (and restart) after this many steps; 0: never.
        u: ``(T, n_chains, 4)`` uniforms: exploration coin, action, successor, restart.

    Returns:
        The number of episodes that ended (terminated or truncated).
    """
    n_steps, n_chains = u.shape[0], u.shape[1]
    n_states, n_actions, n_succ = next_states.shape
    actions = np.empty(n_chains, dtype=np.int64)
    successors = np.empty(n_chains, dtype=np.int64)
    targets = np.empty(n_chains)
    episodes = 0
    for t in range(n_steps):
        # Every chain acts and bootstraps from the same Q_t ...
        for c in range(n_chains):
            s = states[c]
            if uniform_behaviour or u[t, c, 0] < epsilon:
                a = min(int(u[t, c, 1] * n_actions), n_actions - 1)
            else:
                a = _sample_boltzmann(q[s], lam, u[t, c, 1])
            k = first_above(next_cdf[s, a], u[t, c, 2])
            actions[c] = a
            if k == n_succ:  # the episode ends: zero continuation
                successors[c] = -1
                targets[c] = r_end[s, a]
            else:
                s_next = next_states[s, a, k]
                successors[c] = s_next
                targets[c] = r_next[s, a, k] + gamma * _soft_value(q[s_next], lam)
        # ... then the updates are applied and the chains move on.
        for c in range(n_chains):
            s, a = states[c], actions[c]
            n = counts[s, a]
            alpha = lr * (lr_t0 / (lr_t0 + n)) ** lr_power
            q[s, a] += alpha * (targets[c] - q[s, a])
            counts[s, a] = n + 1
            s_next = successors[c]
            taus[c] += 1
            if s_next < 0 or (max_episode_steps > 0 and taus[c] >= max_episode_steps):
                s_next = min(np.searchsorted(reset_cdf, u[t, c, 3], side="right"),
                             n_states - 1)
                taus[c] = 0
                episodes += 1
            states[c] = s_next
    return episodes
