"""A Stable-Baselines3 PPO agent as the follower: 10,000 environment steps for the first
response, 2,000 more on each new x (the model is warm-started with set_env + learn).
Needs the extra: pip install "bilevel-envs[sb3]".

    python examples/followers/sb3_ppo.py
"""

from _demo import run

run("sb3", {"algo": "PPO", "warmup_timesteps": 10_000, "total_timesteps": 2_000,
            "algo_kwargs": {"n_steps": 1_000, "batch_size": 100, "ent_coef": 0.003}},
    leader_steps=3)
