"""Four-Rooms reward shaping: HPGD, AMD and zero-order side by side (paper §5.1, Fig. 1b).

    python examples/four_rooms.py [iterations]

Each leader starts from the same almost uniform penalty; the exact objective J(x) (exact best
responses, exact policy evaluation) is printed every few hundred iterations. At λ = 0.001, β = 1
HPGD's noisy steps can leave the r̃ = 0 local optimum that the deterministic AMD stays in — in
some seeds after a few thousand iterations (`bilevel-bench table3` runs the full comparison).
"""

import sys

import gymnasium as gym

import bilevel_envs  # noqa: F401  (registers the env ids)
from leaders import AMD, HPGD, ZeroOrder

ITERATIONS = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
SETTING = {"lam": 0.001, "beta": 1.0, "move_prob": 0.56}  # the Table 3 set-up


def make(name: str, seed: int = 0):
    if name == "HPGD":  # every-visit estimator over 5 × 2,000 follower steps per gradient
        env = gym.make("bilevel/FourRoomsShaping-v0", n_envs=5, n_rollout_steps=2000, **SETTING)
        return HPGD(env, learning_rate=0.5, seed=seed)
    env = gym.make("bilevel/FourRoomsShaping-v0", objective="exact", n_rollout_steps=0,
                   **SETTING)
    if name == "AMD":
        return AMD(env, learning_rate=0.5, inner="exact", seed=seed)
    return ZeroOrder(env, learning_rate=0.5, perturbation_constant=0.5, seed=seed)


if __name__ == "__main__":
    leaders = {name: make(name) for name in ("HPGD", "AMD", "Zero-order")}
    print("iteration " + "".join(f"{name:>12}" for name in leaders) + "   (exact J)")
    step = max(ITERATIONS // 5, 1)
    for done in range(0, ITERATIONS + 1, step):
        print(f"{done:>9} " + "".join(f"{leader.exact_objective():12.3f}"
                                      for leader in leaders.values()))
        for leader in leaders.values():
            leader.learn(min(step, ITERATIONS - done))
