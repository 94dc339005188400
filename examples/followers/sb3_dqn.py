"""Stable-Baselines3's DQN as the follower; its policy is the Boltzmann policy softmax(Q/λ) of
its (unregularised) Q-network. Needs the extra: pip install "bilevel-envs[sb3]".

    python examples/followers/sb3_dqn.py
"""

from _demo import run

run("sb3", {"algo": "DQN", "warmup_timesteps": 10_000, "total_timesteps": 2_000,
            "algo_kwargs": {"learning_starts": 1_000, "learning_rate": 1e-3,
                            "exploration_fraction": 0.5, "target_update_interval": 1_000}},
    leader_steps=3)
