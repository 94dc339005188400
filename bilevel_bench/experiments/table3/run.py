"""Running one Table 3 spec: build the env and the leader, learn, score the iterates."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from bilevel_bench.experiments.table3.spec import ENV_ID, Table3Spec


def make_leader(spec: Table3Spec):
    """The env and the leader a Table 3 spec describes (HPGD samples trajectories; AMD and
    zero-order query the exact model)."""
    import gymnasium as gym

    import bilevel_envs  # noqa: F401  (registers the ids)
    from leaders import AMD, HPGD, ZeroOrder

    env_kwargs = {"lam": spec.lam, "beta": spec.beta, "move_prob": spec.move_prob,
                  "contexts": "sample", "max_episode_steps": 10**9}
    common = {"learning_rate": spec.learning_rate, "max_grad_norm": spec.max_grad_norm,
              "seed": spec.seed}
    if spec.algorithm == "hpgd":
        env = gym.make(ENV_ID, follower="soft_vi", n_envs=spec.n_envs,
                       n_rollout_steps=spec.n_rollout_steps, **env_kwargs)
        return HPGD(env, estimator=spec.estimator, **common)
    env = gym.make(ENV_ID, follower="soft_vi", objective="exact", n_rollout_steps=0,
                   **env_kwargs)
    if spec.algorithm == "amd":
        return AMD(env, inner=spec.amd_inner, **common)
    return ZeroOrder(env, perturbation_constant=spec.perturbation_constant, **common)


def run_spec(spec: Table3Spec, build: Callable[[Table3Spec], Any] | None = None
             ) -> dict[str, Any]:
    """Run one spec and return its result as plain data: timing, hyperparameters, metrics
    (``score``: mean exact ``J`` over the last ``eval_last`` iterates;
    ``score_sampled_context``: the authors' variant; ``final_objective``), the evaluated curve
    and the final ``x``.

    ``spec.engine == "compiled"`` runs it compiled
    (:func:`~bilevel_bench.experiments.table3.compiled.run_compiled`, the same iterations);
    ``"leaders"``, or a ``build`` function (spec → leader; default :func:`make_leader`), runs a
    :class:`~leaders.base.Leader`'s ``learn``."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    if build is None and spec.engine == "compiled":
        from bilevel_bench.experiments.table3.compiled import run_compiled

        return run_compiled(spec)
    leader = (make_leader if build is None else build)(spec)
    n, every, last = spec.iterations, spec.eval_every, spec.eval_last
    start, cpu = time.perf_counter(), time.process_time()
    leader.learn(n, eval_every=lambda t: t % every == 0 or t >= n - last)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    history = leader.history
    evaluated = np.isfinite(history["exact_objective"])
    iterations = history["iteration"][evaluated]
    per_context = np.stack([history[f"exact_context_{i}"][evaluated]
                            for i in range(leader.problem.n_contexts)], axis=1)
    sampled = np.array([record["contexts"][0] for record in leader.records])[evaluated]
    tail = iterations >= n - last
    return {
        "seconds": seconds, "cpu_seconds": cpu_seconds,
        "hyperparameters": leader.hyperparameters(),
        "metrics": {
            "score": float(history["exact_objective"][evaluated][tail].mean()),
            "score_sampled_context": float(per_context[tail, :][np.arange(tail.sum()),
                                                                sampled[tail]].mean()),
            "final_objective": float(leader.exact_objective()),
        },
        "curve": {"iteration": iterations.tolist(),
                  "objective": history["exact_objective"][evaluated].tolist()},
        "x_final": leader.x.tolist(),
    }
