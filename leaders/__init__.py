"""Leader algorithms for contextual bilevel RL: HPGD (paper Alg. 1, 2, 5), HPGD with RT-Q
(Alg. 8), AMD (Alg. 9), a zero-order method (Alg. 10) and two-point random search, on a common
:class:`~leaders.base.Leader` loop. :mod:`leaders.registry` finds leaders by name, by
``"package.module:Class"`` or through the ``bilevel_envs.leaders`` entry-point group.

    from leaders import HPGD
    leader = HPGD(env, learning_rate=0.1, seed=0).learn(1000, eval_every=100)
"""

from leaders.amd import AMD
from leaders.base import Leader
from leaders.callbacks import Callback, CheckpointCallback
from leaders.hpgd import HPGD
from leaders.hpgd_rtq import HPGDRTQ
from leaders.random_search import RandomSearch
from leaders.registry import (
    BUILTIN_LEADERS,
    ENTRY_POINT_GROUP,
    available_leaders,
    make_leader,
    resolve_leader,
)
from leaders.zero_order import ZeroOrder

#: name -> class of the built-in leaders (:data:`leaders.registry.BUILTIN_LEADERS`; installed
#: third-party leaders: :func:`available_leaders`)
LEADERS = dict(BUILTIN_LEADERS)

__all__ = ["AMD", "BUILTIN_LEADERS", "ENTRY_POINT_GROUP", "HPGD", "HPGDRTQ", "LEADERS",
           "Callback", "CheckpointCallback", "Leader", "RandomSearch", "ZeroOrder",
           "available_leaders", "make_leader", "resolve_leader"]
