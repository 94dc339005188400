"""HPGD with randomly truncated soft Q-learning — RT-Q (paper §4, Alg. 8, Table 2).

When the leader controls the followers' training (soft Q-learning, paper Alg. 4), it need not
run them to the precision ``t_K`` every iteration. With ``t_k = c·k·2^k`` and the telescoping sum
``E ĝ_{t_K} = E ĝ_{t_1} + Σ_{k<K} (E ĝ_{t_{k+1}} − E ĝ_{t_k})``, one random level suffices:

    for t = 0, 1, ...:
        ξ ~ P_ξ;  k ~ p_k ∝ 2^{−k} (k = 1 .. K−1)
        π^{t_1}, π^{t_k}, π^{t_{k+1}} ← one run of soft Q-learning for t_{k+1} steps
        ĝ_1      ← Alg. 5 estimate with π^{t_1}
        g̃_{k+1}  ← mean of 2^k Alg. 5 estimates with π^{t_{k+1}}
        g̃_k      ← the same 2^k estimates with π^{t_k}   (common random numbers)
        ĝ = ĝ_1 + (g̃_{k+1} − g̃_k) / p_k                 (E ĝ = E ĝ_{t_K}: same bias as vanilla)
        x_{t+1} ← Π_X(x_t + α clip(ĝ))

Expected lower-level cost ``Σ_k p_k t_{k+1} = O(K²)`` steps instead of ``t_K = O(K 2^K)``.

Coupling: Alg. 8 draws one action from ``π^{t_{k+1}}`` and reweights it by
``π^{t_k}(a|s)/π^{t_{k+1}}(a|s)`` for the ``t_k`` term. With the decomposable estimator (Alg. 5)
the whole trajectory depends on the policy, so the weight would become a product over the
trajectory; we couple the two terms by common random numbers instead (the same uniforms drive
both estimates). Each term keeps its marginal distribution, so the telescoping sum stays
unbiased, and when the two policies are close most trajectories coincide — the variance
reduction the importance weights are for.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from bilevel_envs.followers.soft_q import SoftQLearning
from bilevel_envs.oracles import make_oracle
from bilevel_envs.validation import check_allocation, check_bool, check_int
from leaders.base import Leader
from leaders.estimators import COMPONENTS, paper_estimate

#: The largest number of precision levels ``K`` (see ``HPGDRTQ``'s ``levels``).
MAX_LEVELS = 30


class HPGDRTQ(Leader):
    """HPGD with randomly truncated soft Q-learning (paper Alg. 8) on a tabular problem.

    The leader runs the followers' soft Q-learning itself (the env's own follower is not used);
    trajectories come from the problem's simulator under the learned policies.

    Track ``"model"``: the simulator of soft Q-learning and Alg. 5 is the exact model, one per
    iteration (:meth:`~leaders.base.Leader.exact_model`, one ``model_queries``). The env's budget
    also counts the soft Q-learning run (``t_{k+1} × n_chains`` transitions and updates) and every
    transition Alg. 5 samples; the rollouts of the logged ``objective_estimate`` are evaluation
    and not counted.

    Args:
        env: a leader env of a tabular problem.
        learning_rate: step size α.
        levels: K, the number of precision levels (2 ≤ K ≤ :data:`MAX_LEVELS`).
        steps_scale: c in ``t_k = c·k·2^k`` (soft Q-learning steps at level k).
        n_samples: Alg. 5 estimates at level 1 (level k uses ``2^k · n_samples``).
        soft_q_kwargs: :class:`~bilevel_envs.followers.soft_q.SoftQLearning` arguments.
        coupled_restarts: common random numbers inside Alg. 2 (unbiased, less noise).
        **kwargs: :class:`~leaders.base.Leader` arguments.
    """

    algorithm: ClassVar[str] = "hpgd_rtq"
    track: ClassVar[str] = "model"
    decomposable_only: ClassVar[bool] = True

    def __init__(self, env, learning_rate: float = 0.1, levels: int = 5, steps_scale: int = 20,
                 n_samples: int = 1, soft_q_kwargs: dict[str, Any] | None = None,
                 coupled_restarts: bool = True, **kwargs: Any):
        super().__init__(env, learning_rate=learning_rate, **kwargs)
        if not self.problem.is_tabular:
            raise ValueError("HPGDRTQ runs soft Q-learning on the problem's model; "
                             f"{type(self.problem).__name__} has none")
        if not self.problem.decomposable:
            raise ValueError(f"HPGDRTQ estimates a decomposable J with paper Alg. 5; "
                             f"{type(self.problem).__name__} has a trajectory-level objective: use "
                             "HPGD (its trajectory estimator) or ZeroOrder")
        if soft_q_kwargs is not None and not isinstance(soft_q_kwargs, dict):
            raise ValueError(f"soft_q_kwargs must be a dict of SoftQLearning arguments or None; "
                             f"got {soft_q_kwargs!r}")
        # Level K runs steps_scale·K·2^K soft-Q steps with probability 2^−(K−1): past
        # MAX_LEVELS its cost is beyond any run and its probability below 1e-9.
        check_int("levels", levels, 2, MAX_LEVELS)
        for name, value in (("steps_scale", steps_scale), ("n_samples", n_samples)):
            check_int(name, value, 1)
        self.levels, self.steps_scale = int(levels), int(steps_scale)
        self.n_samples = int(n_samples)
        # the deepest sampled level, K − 1, averages one batch of 2^(K−1) · n_samples estimates
        check_allocation("2**(levels − 1) × n_samples", 2**(self.levels - 1) * self.n_samples)
        self.soft_q_kwargs = dict(soft_q_kwargs or {})
        self.soft_q = SoftQLearning(**self.soft_q_kwargs)
        self.coupled_restarts = check_bool("coupled_restarts", coupled_restarts)
        #: t_1 .. t_K
        self.schedule = [self.steps_scale * k * 2**k for k in range(1, self.levels + 1)]
        weights = 2.0 ** -np.arange(1, self.levels)
        #: p_k for k = 1 .. K−1 (normalised; the paper's 2^{−k}/(1−2^{−K}) does not sum to one)
        self.truncation_probs = weights / weights.sum()

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "levels": self.levels,
                "steps_scale": self.steps_scale, "n_samples": self.n_samples,
                "soft_q_kwargs": self.soft_q_kwargs, "coupled_restarts": self.coupled_restarts}

    @property
    def expected_lower_level_steps(self) -> float:
        """``Σ_k p_k t_{k+1}``: soft Q-learning steps per iteration, in expectation."""
        return float(self.truncation_probs @ np.array(self.schedule[1:]))

    def estimate_gradient(self) -> tuple[np.ndarray, dict[str, Any]]:
        return self._telescoped(by_term=False)

    def estimate_gradient_by_term(self) -> tuple[dict[tuple[str, str], np.ndarray],
                                                 dict[str, Any]]:
        """The estimate of :meth:`estimate_gradient` (the same random numbers) split into the
        hypergradient's components (:data:`~leaders.estimators.COMPONENTS`):
        ``{(term, kind): (d,)}``, summing to the estimate up to round-off."""
        grad, info = self._telescoped(by_term=True)
        return dict(zip(COMPONENTS, grad)), info

    def _telescoped(self, by_term: bool) -> tuple[np.ndarray, dict[str, Any]]:
        context = self.problem.sample_context(self.rng)
        k = 1 + int(self.rng.choice(self.levels - 1, p=self.truncation_probs))
        t1, tk, tk1 = self.schedule[0], self.schedule[k - 1], self.schedule[k]
        seed = int(self.rng.integers(0, 2**31 - 1))
        model = self.exact_model(context)
        responses = self.soft_q.learn_iterates(self.problem, self.x, context, [t1, tk, tk1],
                                               seed=seed, model=model)
        self._charge(responses[-1].cost)  # the run's cost is that of its last iterate
        pi_1, pi_k, pi_k1 = (r.policy for r in responses)

        g_1 = self._alg5_mean(context, pi_1, self.n_samples, by_term)
        n = 2**k * self.n_samples
        shared = self.rng.bit_generator.state
        g_k1 = self._alg5_mean(context, pi_k1, n, by_term)
        self.rng.bit_generator.state = shared  # common random numbers for the pair
        g_k = self._alg5_mean(context, pi_k, n, by_term)
        grad = g_1 + (g_k1 - g_k) / self.truncation_probs[k - 1]
        return grad, {"objective_estimate": self._objective_estimate(context, pi_k1, model),
                      "contexts": [context], "truncation_level": k, "lower_level_steps": tk1}

    def _objective_estimate(self, context: int, policy, model, n_envs: int = 16) -> float:
        """Monte-Carlo ``J_ξ`` of the finest policy: ``n_envs`` episodes of at most
        ``10/(1−γ̄)`` steps (for the history and progress bar only: evaluation, not counted in
        the budget)."""
        oracle = make_oracle(self.problem, self.x, context, policy, model=model)
        horizon = int(np.ceil(10 / (1 - self.problem.leader_gamma)))
        rollouts = oracle.rollout(self.rng, n_envs, horizon, auto_reset=False)
        return self.problem.estimate_objective(self.x, context, rollouts, self.rng)

    def vanilla_estimate(self, by_term: bool = False) -> tuple[np.ndarray, int]:
        """The estimate of HPGD with vanilla soft Q-learning at ``t_K`` (paper Alg. 7) and its
        lower-level step count, for comparison with RT-Q (Table 2); ``by_term``: the estimate
        as a ``(len(COMPONENTS), d)`` array, one row per component."""
        context = self.problem.sample_context(self.rng)
        seed = int(self.rng.integers(0, 2**31 - 1))
        model = self.exact_model(context)
        (response,) = self.soft_q.learn_iterates(self.problem, self.x, context, [self.schedule[-1]],
                                                 seed=seed, model=model)
        self._charge(response.cost)
        return (self._alg5_mean(context, response.policy, self.n_samples, by_term),
                self.schedule[-1])

    def _charge(self, cost) -> None:
        """Charge the env's budget (when it counts one) for the soft Q-learning run."""
        charge = getattr(self.env.unwrapped, "charge", None)
        if charge is not None:
            charge(cost)

    def _alg5_mean(self, context: int, policy, n: int, by_term: bool = False) -> np.ndarray:
        """The mean of ``n`` Alg. 5 estimates with the follower's ``policy``: ``(d,)``, or
        ``(len(COMPONENTS), d)`` split by component with ``by_term``; the samples are charged to
        the env's budget."""
        oracle = make_oracle(self.problem, self.x, context, policy)
        counted = getattr(self.env.unwrapped, "counted", None)
        oracle = oracle if counted is None else counted(oracle)
        terms = paper_estimate(self.problem, self.x, context, oracle, self.rng, n,
                               coupled=self.coupled_restarts)
        if by_term:
            return np.stack([terms.total(term, kind) for term, kind in COMPONENTS]) / n
        return terms.total() / n
