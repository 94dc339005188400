"""A Q-network for followers that know their reward and what each action leaves them with.

Many economic followers know their own utility ``r(s, a)`` and the part of the next state that
their choice decides — a household knows what it earns and spends, so it knows the savings
``m(s, a)`` it carries into the next period; only the shock added to them is random. Then the
soft Bellman equation splits at this *afterstate* (Sutton & Barto 2018, §6.8; the
post-decision state of approximate dynamic programming)::

    Q(s, a) = r(s, a) + γ W(z(s, a)),     W(z) = E[V(s') | z],   V(s) = λ logΣ_a exp(Q(s, a)/λ)

and only the one function ``W`` of the afterstate has to be learned. Every action that leads to
the same afterstate shares its data, and no action can be overrated on its own: the errors of
``Q`` are errors of ``W`` at the afterstates, smooth across actions that save alike. Soft DQN
trains ``W`` unchanged (its loss ``(Q(s, a) − r − γ V(s'))²`` is ``γ² (W(z) − V(s'))²`` when the
replayed reward is ``r(s, a)``).

On a finite observation space the tables ``r`` ``(S, A)`` and ``z`` ``(S, A, k)`` come from
the problem (``problem.follower_afterstates(x, ξ)``, e.g. tax design's grid economy); the
follower refreshes them when the leader moves ``x`` (:meth:`AfterstateQNetwork.set_afterstates`).
``W`` is an MLP of the afterstate features.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bilevel_envs.followers.sb3 import MISSING_SB3
from bilevel_envs.validation import check_array, check_float

try:
    import torch as th
    from gymnasium import spaces
    from stable_baselines3.common.torch_layers import create_mlp
    from stable_baselines3.dqn.policies import DQNPolicy, QNetwork
    from torch import nn
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(MISSING_SB3) from exc


class AfterstateQNetwork(QNetwork):
    """``Q(s, ·) = r(s, ·) + γ · value_scale · W(z(s, ·))`` on a ``Discrete`` observation space.

    Args (besides SB3's ``QNetwork``'s):
        rewards: ``(S, A)`` reward of every state and action.
        afterstates: ``(S, A, k)`` features of the afterstate each action leads to.
        discount: ``γ``.
        net_arch: hidden layer sizes of ``W`` (default ``[64, 64]``).
        value_scale: the output of ``W`` is multiplied by it (values of order ``value_scale``
            from weights of order one).
    """

    def __init__(self, observation_space: Any, action_space: Any, features_extractor: Any,
                 features_dim: int, rewards: np.ndarray, afterstates: np.ndarray,
                 discount: float, net_arch: list[int] | None = None,
                 activation_fn: type[nn.Module] = nn.ReLU, value_scale: float = 1.0,
                 normalize_images: bool = True):
        if not isinstance(observation_space, spaces.Discrete):
            raise ValueError(f"AfterstateQNetwork needs a Discrete observation space (its "
                             f"tables are per state); got {observation_space}")
        super().__init__(observation_space, action_space, features_extractor, features_dim,
                         net_arch=[], activation_fn=activation_fn,
                         normalize_images=normalize_images)
        self.net_arch = [64, 64] if net_arch is None else list(net_arch)
        self.discount, self.value_scale = float(discount), float(value_scale)
        shape = (int(observation_space.n), int(action_space.n))
        self.register_buffer("rewards", th.zeros(shape))
        self.register_buffer("afterstate_table", th.zeros((0, 0)))
        self.register_buffer("afterstate_index", th.zeros(shape, dtype=th.long))
        self.set_afterstates(rewards, afterstates)
        # W replaces SB3's per-action head.
        self.q_net = nn.Sequential(*create_mlp(self.afterstate_table.shape[1], 1, self.net_arch,
                                               activation_fn))

    def set_afterstates(self, rewards: np.ndarray, afterstates: np.ndarray) -> None:
        """Replace the tables (the leader moved ``x``); ``W``'s weights are kept. Afterstates
        shared by several ``(s, a)`` are stored once, so ``W`` is evaluated once per distinct
        afterstate.

        Raises:
            ValueError: naming the table, unless ``rewards`` is a finite ``(S, A)`` array and
                ``afterstates`` a finite ``(S, A, k)`` one.
        """
        shape = tuple(self.rewards.shape)
        rewards = check_array("rewards", rewards, shape).astype(np.float32)
        # float32 before de-duplicating: the stored table round-trips through tables()
        afterstates = check_array("afterstates", afterstates, (*shape, None)).astype(np.float32)
        distinct, inverse = np.unique(afterstates.reshape(-1, afterstates.shape[2]), axis=0,
                                      return_inverse=True)
        device = self.rewards.device
        self.rewards = th.as_tensor(rewards, device=device)
        self.afterstate_table = th.as_tensor(distinct, device=device)
        self.afterstate_index = th.as_tensor(inverse.reshape(shape), device=device)

    def tables(self) -> tuple[np.ndarray, np.ndarray]:
        """The current ``rewards`` ``(S, A)`` and ``afterstates`` ``(S, A, k)`` (float32)."""
        index = self.afterstate_index.cpu().numpy()
        return self.rewards.cpu().numpy(), self.afterstate_table.cpu().numpy()[index]

    def _continuation(self, keys: th.Tensor) -> th.Tensor:
        """``γ · value_scale · W`` at the afterstates ``keys`` (indices into the distinct
        afterstates, any shape), evaluating ``W`` once per distinct key."""
        used, inverse = th.unique(keys, return_inverse=True)
        values = self.q_net(self.afterstate_table[used])[:, 0]
        return self.discount * self.value_scale * values[inverse]

    def forward(self, obs: th.Tensor) -> th.Tensor:
        states = obs.long().reshape(-1)
        return self.rewards[states] + self._continuation(self.afterstate_index[states])

    def q_values_at(self, obs: th.Tensor, actions: th.Tensor) -> th.Tensor:
        """``(B, 1)`` Q-values of the given actions (``(B, 1)`` indices) only."""
        states, actions = obs.long().reshape(-1), actions.long().reshape(-1)
        q = self.rewards[states, actions] + \
            self._continuation(self.afterstate_index[states, actions])
        return q[:, None]

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        rewards, afterstates = self.tables()
        data.update(rewards=rewards, afterstates=afterstates, discount=self.discount,
                    net_arch=self.net_arch, value_scale=self.value_scale)
        return data


class AfterstateDQNPolicy(DQNPolicy):
    """DQN policy whose Q-networks are :class:`AfterstateQNetwork` s (SB3 alias
    ``"AfterstateMlpPolicy"`` of :class:`~bilevel_envs.followers.soft_dqn.SoftDQN`).

    Args (besides DQNPolicy's; ``net_arch`` sizes ``W``'s hidden layers):
        rewards: ``(S, A)`` reward table (required).
        afterstates: ``(S, A, k)`` afterstate features (required).
        discount: ``γ`` of ``Q = r + γ W`` (required: the follower passes the problem's).
        value_scale: factor applied to ``W`` (default 1).
    """

    def __init__(self, observation_space: Any, action_space: Any, lr_schedule: Any,
                 rewards: np.ndarray | None = None, afterstates: np.ndarray | None = None,
                 discount: float | None = None, value_scale: float = 1.0, **kwargs: Any):
        if rewards is None or afterstates is None or discount is None:
            raise ValueError("AfterstateDQNPolicy needs rewards (S, A), afterstates (S, A, k) "
                             "and discount (policy_kwargs; SoftDQNFollower fills them from "
                             "problem.follower_afterstates(x, context))")
        self._afterstate_args = {
            "rewards": rewards, "afterstates": afterstates,
            "discount": check_float("discount", discount, 0.0, 1.0, high_open=True),
            "value_scale": check_float("value_scale", value_scale, 0.0, low_open=True)}
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def make_q_net(self) -> AfterstateQNetwork:
        net_args = self._update_features_extractor(self.net_args, features_extractor=None)
        return AfterstateQNetwork(**net_args, **self._afterstate_args).to(self.device)

    def set_afterstates(self, rewards: np.ndarray, afterstates: np.ndarray) -> None:
        """New tables for the online and the target network (SB3 copies only parameters
        to the target)."""
        for net in (self.q_net, self.q_net_target):
            net.set_afterstates(rewards, afterstates)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        """DQNPolicy's, with the Q-network's current tables (a copy of this policy, e.g. a
        follower's response, answers for the ``x`` it was made at)."""
        data = super()._get_constructor_parameters()
        rewards, afterstates = self.q_net.tables()
        data.update(self._afterstate_args, rewards=rewards, afterstates=afterstates)
        return data
