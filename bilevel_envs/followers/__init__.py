"""Followers, chosen by name with plain-data keyword arguments.

=============  ==========================================================  ======================
name           class                                                       needs
=============  ==========================================================  ======================
``soft_vi``    :class:`~.soft_vi.SoftValueIteration` (paper Alg. 3)        a tabular problem
``soft_q``     :class:`~.soft_q.SoftQLearning` (paper Alg. 4)              a tabular problem
``sb3``        :class:`~.sb3.SB3Follower` (PPO, A2C, DQN or any SB3        ``bilevel-envs[sb3]``
               algorithm for ``Discrete`` actions)
``soft_dqn``   :class:`~.soft_dqn.SoftDQNFollower` (entropy-regularised     ``bilevel-envs[sb3]``
               DQN built on SB3's DQN; the paper's tax-design follower)
=============  ==========================================================  ======================

HPGD and ZeroOrder work with every follower; AMD uses none. ``docs/followers.md`` has each
follower's arguments and a "Can I use?" table of followers × environments × leaders.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from bilevel_envs.followers.base import Follower, FollowerResponse
from bilevel_envs.policies import Policy, TabularPolicy

#: name -> "module:Class"; modules are imported on first use (SB3/torch load lazily).
FOLLOWERS: dict[str, str] = {
    "soft_vi": "bilevel_envs.followers.soft_vi:SoftValueIteration",
    "soft_q": "bilevel_envs.followers.soft_q:SoftQLearning",
    "sb3": "bilevel_envs.followers.sb3:SB3Follower",
    "soft_dqn": "bilevel_envs.followers.soft_dqn:SoftDQNFollower",
}


#: the optional packages a follower imports (its extra): checked without importing them
REQUIREMENTS: dict[str, tuple[str, ...]] = {
    "sb3": ("torch", "stable_baselines3"),
    "soft_dqn": ("torch", "stable_baselines3"),
}


def follower_available(name: str) -> bool:
    """Whether ``make_follower(name)`` can work in this installation: ``name`` is registered and
    the packages of its extra (:data:`REQUIREMENTS`) are importable (found, not imported)."""
    if name not in FOLLOWERS:
        return False
    try:
        return all(importlib.util.find_spec(module) is not None
                   for module in REQUIREMENTS.get(name, ()))
    except (ImportError, ValueError):  # a module set to None or a broken parent package
        return False


def register_follower(name: str, entry_point: str) -> None:
    """Make ``make_follower(name)`` build the class at ``entry_point`` (``"module:Class"``)."""
    FOLLOWERS[name] = entry_point


def make_follower(follower: str | Follower, **kwargs: Any) -> Follower:
    """Build a follower from its registry name and keyword arguments (or pass one through).

    Raises:
        KeyError: for an unknown name, listing the known ones.
    """
    if isinstance(follower, Follower):
        if kwargs:
            raise ValueError("follower_kwargs cannot be combined with a follower instance")
        return follower
    try:
        entry_point = FOLLOWERS[follower]
    except (KeyError, TypeError):
        raise KeyError(f"unknown follower {follower!r}; expected one of {sorted(FOLLOWERS)}"
                       ) from None
    module, cls = entry_point.split(":")
    return getattr(importlib.import_module(module), cls)(**kwargs)


__all__ = ["FOLLOWERS", "REQUIREMENTS", "Follower", "FollowerResponse", "Policy", "TabularPolicy",
           "follower_available", "make_follower", "register_follower"]
