"""Soft (entropy-regularised) DQN built on SB3's DQN: soft Bellman targets, Boltzmann behaviour
and evaluation policy softmax(Q/λ), λ and γ taken from the problem. The paper's follower for tax
design. Needs the extra: pip install "bilevel-envs[sb3]".

    python examples/followers/soft_dqn.py
"""

from _demo import run

run("soft_dqn", {"warmup_timesteps": 10_000, "total_timesteps": 2_000,
                 "algo_kwargs": {"learning_starts": 1_000, "learning_rate": 1e-3,
                                 "exploration_fraction": 0.5, "target_update_interval": 1_000}},
    leader_steps=3)
