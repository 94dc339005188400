"""A Q-network over a joint (factored, flattened) action: ``Q(s, a) = φ(s)·ψ(a)``.

DQN's default head has one independent output per flat action: with the 1,250 joint actions of a
tax-design household (hours × three consumption levels) each output learns only from the visits
of its own action. The additive factorised head of the paper's authors (``Q = Σ_d Q_d(s, a_d)``,
docs/tax_design.md) shares data across actions but cannot represent complementarity — a
Cobb–Douglas utility is 0 unless every preferred good is bought, which is not a sum of per-good
terms. This head embeds each joint action by a small network of its *features* (e.g. its hours
and consumption values) and scores it against a state embedding::

    Q(s, a) = φ(s)·ψ(f(a)) + b(f(a))        (+ v(s) with state_value=True)

``φ`` and ``ψ`` are MLPs; ``f(a)`` is a fixed ``(A, k)`` table of action features (passed as
``action_features``). Any function of the joint action is representable by ``ψ`` (it sees all
of ``f(a)`` at once), and similar actions share what they learn. One forward pass over a batch
costs one ``(B, r) × (r, A)`` product: cheap enough for soft targets over all actions.

``state_value=True`` adds a per-state value ``v(s)`` (a linear function of the state
features; with one-hot states, one free number per state): the part of ``Q`` common to all
actions, which spans hundreds on the tax economy's asset range while the differences between
actions that the policy ``softmax(Q/λ)`` depends on are of order one (docs/tax_design.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bilevel_envs.followers.sb3 import MISSING_SB3
from bilevel_envs.validation import check_bool, check_float, check_int

try:
    import torch as th
    from stable_baselines3.common.torch_layers import create_mlp
    from stable_baselines3.dqn.policies import DQNPolicy, QNetwork
    from torch import nn
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(MISSING_SB3) from exc


class JointActionHead(nn.Module):
    """``Q(s, ·) = φ(s) ψ(F)ᵀ + b(F)ᵀ`` for features ``s`` and the action feature table ``F``.

    Args:
        features_dim: size of the state features.
        action_features: ``(A, k)`` features of every flat action (finite numbers).
        state_arch, action_arch: hidden layer sizes of ``φ`` and ``ψ``.
        rank: size ``r`` of the embeddings.
        activation_fn: activation of both MLPs.
        obs_scale: the state features are multiplied by it first (e.g. ``1/20`` for assets in
            ``[−100, 100]``: inputs of order 1 keep the MLP's units in their useful range).
        q_scale: the output is multiplied by it (Q-values of order ``q_scale`` from weights of
            order one).
        state_value: add the per-state value ``v(s)`` (linear in the state features).
    """

    def __init__(self, features_dim: int, action_features: np.ndarray, state_arch: list[int],
                 action_arch: list[int], rank: int, activation_fn: type[nn.Module],
                 obs_scale: float = 1.0, q_scale: float = 1.0, state_value: bool = False):
        super().__init__()
        table = np.asarray(action_features, dtype=np.float32)
        if table.ndim != 2 or not np.isfinite(table).all():
            raise ValueError(f"action_features must be a finite (n_actions, k) table; got shape "
                             f"{table.shape}")
        self.register_buffer("action_features", th.as_tensor(table))
        self.obs_scale, self.q_scale = float(obs_scale), float(q_scale)
        self.state_net = nn.Sequential(*create_mlp(features_dim, rank, state_arch, activation_fn))
        self.action_net = nn.Sequential(*create_mlp(table.shape[1], rank + 1, action_arch,
                                                    activation_fn))
        self.value_net = nn.Linear(features_dim, 1) if state_value else None

    def forward(self, features: th.Tensor) -> th.Tensor:
        features = features * self.obs_scale
        phi = self.state_net(features)  # (B, r)
        psi = self.action_net(self.action_features)  # (A, r + 1): embedding and bias
        q = phi @ psi[:, :-1].T + psi[:, -1]
        if self.value_net is not None:
            q = q + self.value_net(features)
        return self.q_scale * q

    def forward_at(self, features: th.Tensor, actions: th.Tensor) -> th.Tensor:
        """``Q(s_i, a_i)`` for a batch of states and one action each (``(B,)``): equal to
        ``forward(features)[i, a_i]``, with ``ψ`` computed for the batch's distinct actions
        only (a training loss needs no more; ``A`` may be far larger than the batch)."""
        features = features * self.obs_scale
        phi = self.state_net(features)  # (B, r)
        distinct, inverse = th.unique(actions, return_inverse=True)
        psi = self.action_net(self.action_features[distinct])[inverse]  # (B, r + 1)
        q = (phi * psi[:, :-1]).sum(-1) + psi[:, -1]
        if self.value_net is not None:
            q = q + self.value_net(features)[:, 0]
        return self.q_scale * q


class JointActionQNetwork(QNetwork):
    """SB3's ``QNetwork`` with :class:`JointActionHead` in place of the per-action MLP head."""

    def __init__(self, observation_space: Any, action_space: Any, features_extractor: Any,
                 features_dim: int, action_features: np.ndarray, net_arch: list[int] | None = None,
                 action_arch: list[int] | None = None, rank: int = 32,
                 activation_fn: type[nn.Module] = nn.ReLU, obs_scale: float = 1.0,
                 q_scale: float = 1.0, state_value: bool = False,
                 normalize_images: bool = True):
        super().__init__(observation_space, action_space, features_extractor, features_dim,
                         net_arch=[], activation_fn=activation_fn,
                         normalize_images=normalize_images)
        if np.shape(action_features)[0] != action_space.n:
            raise ValueError(f"action_features needs one row per action ({action_space.n}); got "
                             f"{np.shape(action_features)[0]}")
        self.net_arch = [64, 64] if net_arch is None else list(net_arch)
        self.action_arch = [64] if action_arch is None else list(action_arch)
        self.rank, self.obs_scale, self.q_scale = int(rank), float(obs_scale), float(q_scale)
        self.state_value = bool(state_value)
        self.action_feature_table = np.asarray(action_features, dtype=np.float32)
        self.q_net = JointActionHead(features_dim, self.action_feature_table, self.net_arch,
                                     self.action_arch, self.rank, activation_fn, self.obs_scale,
                                     self.q_scale, self.state_value)

    def q_values_at(self, obs: th.Tensor, actions: th.Tensor) -> th.Tensor:
        """``(B, 1)`` Q-values of the given actions (``(B, 1)`` indices) only:
        ``th.gather(self(obs), 1, actions)`` without scoring every action
        (:meth:`JointActionHead.forward_at`)."""
        features = self.extract_features(obs, self.features_extractor)
        return self.q_net.forward_at(features, actions.long().reshape(-1))[:, None]

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(action_features=self.action_feature_table, action_arch=self.action_arch,
                    rank=self.rank, obs_scale=self.obs_scale, q_scale=self.q_scale,
                    state_value=self.state_value)
        return data


class JointActionDQNPolicy(DQNPolicy):
    """DQN policy whose Q-networks are :class:`JointActionQNetwork` s (SB3 alias
    ``"JointMlpPolicy"`` of :class:`~bilevel_envs.followers.soft_dqn.SoftDQN`).

    Args (besides DQNPolicy's):
        action_features: ``(A, k)`` features of every flat action (required).
        action_arch: hidden sizes of the action embedding ``ψ`` (default ``[64]``).
        rank: embedding size (default 32).
        obs_scale: factor applied to the observation features (default 1).
        q_scale: factor applied to the Q-values (default 1).
        state_value: add a per-state value ``v(s)`` (default False).
    """

    def __init__(self, observation_space: Any, action_space: Any, lr_schedule: Any,
                 action_features: np.ndarray | None = None,
                 action_arch: list[int] | None = None, rank: int = 32, obs_scale: float = 1.0,
                 q_scale: float = 1.0, state_value: bool = False, **kwargs: Any):
        if action_features is None:
            raise ValueError("JointActionDQNPolicy needs action_features: an (n_actions, k) "
                             "table (policy_kwargs={'action_features': ...})")
        rank = check_int("rank", rank, 1)
        obs_scale = check_float("obs_scale", obs_scale, 0.0, low_open=True)
        q_scale = check_float("q_scale", q_scale, 0.0, low_open=True)
        check_bool("state_value", state_value)
        self._joint_args = {"action_features": np.asarray(action_features, dtype=np.float32),
                            "action_arch": action_arch, "rank": int(rank),
                            "obs_scale": float(obs_scale), "q_scale": float(q_scale),
                            "state_value": bool(state_value)}
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def make_q_net(self) -> JointActionQNetwork:
        net_args = self._update_features_extractor(self.net_args, features_extractor=None)
        return JointActionQNetwork(**net_args, **self._joint_args).to(self.device)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(self._joint_args)
        return data
