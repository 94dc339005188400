"""The exact follower: soft value iteration (paper Alg. 3), solved by soft policy iteration.

    python examples/followers/soft_vi.py
"""

from _demo import run

run("soft_vi", {"tol": 1e-10})
