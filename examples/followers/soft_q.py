"""Tabular soft Q-learning (paper Alg. 4): 16 chains × 20,000 steps of sampled transitions per
response, warm-started (Q-table and visit counts) from the previous response.

    python examples/followers/soft_q.py
"""

from _demo import run

run("soft_q", {"n_steps": 20_000, "n_chains": 16, "behaviour": "uniform", "reset": "uniform"})
