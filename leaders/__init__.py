"""Leader algorithms for contextual bilevel RL: HPGD (paper Alg. 1, 2, 5), HPGD with RT-Q
(Alg. 8), AMD (Alg. 9) and a zero-order method (Alg. 10), on a common
:class:`~leaders.base.Leader` loop.

    from leaders import HPGD
    leader = HPGD(env, learning_rate=0.1, seed=0).learn(1000, eval_every=100)
"""

from leaders.amd import AMD
from leaders.base import Leader
from leaders.callbacks import Callback, CheckpointCallback
from leaders.hpgd import HPGD
from leaders.hpgd_rtq import HPGDRTQ
from leaders.zero_order import ZeroOrder

#: name -> class, for specs and the command line
LEADERS = {"hpgd": HPGD, "hpgd_rtq": HPGDRTQ, "amd": AMD, "zero_order": ZeroOrder}

__all__ = ["AMD", "HPGD", "HPGDRTQ", "LEADERS", "Callback", "CheckpointCallback", "Leader",
           "ZeroOrder"]
