"""Four-Rooms reward shaping (paper §5.1, App. F.2): a leader penalises cells to steer followers
towards its target.

``model`` holds the pure model logic, ``problem`` the :class:`FourRoomsShaping` problem and
``envs`` the registered Gymnasium envs.
"""

from bilevel_envs.envs.four_rooms.envs import FourRoomsEnv, FourRoomsShapingEnv
from bilevel_envs.envs.four_rooms.problem import FourRoomsShaping

__all__ = ["FourRoomsEnv", "FourRoomsShaping", "FourRoomsShapingEnv"]
