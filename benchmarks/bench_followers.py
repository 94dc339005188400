"""Cost and accuracy of each follower type on Four-Rooms (λ = 0.003, β = 1), both goals.

A fixed leader path (exact hypergradient ascent from the reference init, 5 steps) is followed by
every follower, warm-started along the path as a LeaderEnv does. Printed per follower: wall time
of the cold first response and of the warm-started ones (median, per context), and the exact
leader objective J of the follower's policies against J of the exact best response π*, at the
first and the last x, and the followers' own regret ``μ·(V*_λ − V^π_λ)`` at the last x (their
soft values: how well they solve M_{x,ξ}; the leader's J can be higher under a worse follower).

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_followers.py [name ...]
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from bilevel_envs.envs.four_rooms.problem import FourRoomsShaping  # noqa: E402
from bilevel_envs.exact import ExactSolver
from bilevel_envs.followers import make_follower  # noqa: E402
from bilevel_envs.hypergradient import leader_values
from bilevel_envs.tabular import evaluate_policy, soft_policy_iteration

SB3_BUDGET = {"warmup_timesteps": 20_000, "total_timesteps": 5_000}
#: name -> (registry name, follower kwargs)
CONFIGS = {
    "soft_vi": ("soft_vi", {}),
    "soft_q": ("soft_q", {"n_steps": 20_000, "n_chains": 16}),
    "sb3_ppo": ("sb3", {"algo": "PPO", **SB3_BUDGET,
                        "algo_kwargs": {"n_steps": 1_000, "batch_size": 100, "ent_coef": 0.003}}),
    "sb3_dqn": ("sb3", {"algo": "DQN", **SB3_BUDGET,
                        "algo_kwargs": {"learning_starts": 1_000, "learning_rate": 1e-3,
                                        "exploration_fraction": 0.5,
                                        "target_update_interval": 1_000}}),
    "soft_dqn": ("soft_dqn", {**SB3_BUDGET,
                              "algo_kwargs": {"learning_starts": 1_000, "learning_rate": 1e-3,
                                              "exploration_fraction": 0.5,
                                              "target_update_interval": 1_000}}),
}
LEADER_STEPS, LEADER_LR = 5, 30.0


def leader_path(problem: FourRoomsShaping) -> list[np.ndarray]:
    """x_0 = the reference init (seed 0), then exact hypergradient ascent steps."""
    solver = ExactSolver(problem)
    x = problem.sample_x_init(np.random.default_rng(0))
    path = [x]
    for _ in range(LEADER_STEPS - 1):
        x = np.clip(x + LEADER_LR * solver.value_and_grad(x)[1], -30.0, 30.0)
        path.append(x)
    return path


def exact_j(problem: FourRoomsShaping, x: np.ndarray, tables: list[np.ndarray]) -> float:
    """Context-weighted exact leader objective of the given follower policy tables."""
    values = [float(leader_values(problem.tabular(x, c), table, problem.lam,
                                  with_gradient=False).objective) for c, table in enumerate(tables)]
    return float(problem.context_probs @ values)


def follower_regret(problem: FourRoomsShaping, x: np.ndarray, tables: list[np.ndarray]) -> float:
    """Context-weighted ``μ·(V*_λ − V^π_λ)``: how far the followers are from solving their MDP."""
    regrets = []
    for c, table in enumerate(tables):
        model = problem.tabular(x, c)
        v_star = soft_policy_iteration(model, problem.lam).v
        v_pi = evaluate_policy(model, table, lam=problem.lam)
        regrets.append(float(model.mu @ (v_star - v_pi)))
    return float(problem.context_probs @ regrets)


def run(name: str) -> None:
    problem = FourRoomsShaping(lam=0.003, beta=1.0)
    registry_name, kwargs = CONFIGS[name]
    follower = make_follower(registry_name, **kwargs)
    solver = ExactSolver(problem)
    warm: dict[int, object] = {}
    times: list[float] = []
    js = []
    for t, x in enumerate(leader_path(problem)):
        tables = []
        for c in range(problem.n_contexts):
            start = time.perf_counter()
            response = follower.respond(problem, x, c, seed=1000 * t + c, warm_start=warm.get(c))
            times.append(time.perf_counter() - start)
            warm[c] = response.warm_start
            tables.append(response.policy.action_probs(np.arange(104)))
        js.append((exact_j(problem, x, tables), solver.objective(x)))
    regret = follower_regret(problem, x, tables)
    cold = float(np.median(times[:2]))
    warm_time = float(np.median(times[2:]))
    print(f"{name:9s} {cold:9.3f} {warm_time:9.3f}   {js[0][0]:8.4f} {js[0][1]:8.4f}   "
          f"{js[-1][0]:8.4f} {js[-1][1]:8.4f}   {regret:8.4f}", flush=True)


def main() -> None:
    names = sys.argv[1:] or list(CONFIGS)
    print("follower  cold [s]  warm [s]   J(π) x0  J(π*) x0   J(π) x4  J(π*) x4   regret x4")
    for name in names:
        run(name)


if __name__ == "__main__":
    main()
