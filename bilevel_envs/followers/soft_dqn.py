"""Soft (entropy-regularised) DQN on top of Stable-Baselines3's DQN, and its follower.

:class:`SoftDQN` is an SB3 algorithm (``SoftDQN("MlpPolicy", env, lam=0.1).learn(10_000)``) for
the regularised objective ``E[Σ_t γ^t (r_t + λ H(π(·|s_t)))]``. It changes two things in DQN:

* the regression target is the soft Bellman target (paper Eq. 23, Appendix E.8)
  ``y = r + γ (1 − done) λ logΣ_a' exp(Q_target(s', a')/λ)`` instead of ``r + γ max Q_target``;
* the behaviour policy samples the Boltzmann policy ``softmax(Q(s, ·)/λ)``, mixed with uniform
  actions at DQN's exploration rate ε (annealed from 1 to 0 early in training by default).

The soft optimum is ``π* = softmax(Q*/λ)``: the follower's evaluation policy. The paper trains
such a network for tax design (docs/reference.md §5.2); there it uses factorised per-dimension
heads, here the Q-network covers the flattened ``Discrete`` action space: one output per action
(``"MlpPolicy"``) or the joint-action head ``Q(s, a) = φ(s)·ψ(f(a))`` over action features
(``"JointMlpPolicy"``, :mod:`bilevel_envs.followers.joint_q`). ``double_q=True`` regresses on
:func:`soft_double_target` instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from bilevel_envs.followers.afterstate_q import AfterstateDQNPolicy
from bilevel_envs.followers.joint_q import JointActionDQNPolicy
from bilevel_envs.followers.sb3 import MISSING_SB3, SB3Follower
from bilevel_envs.validation import check_float

try:
    import torch as th
    from stable_baselines3 import DQN
    from torch.nn import functional as F
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(MISSING_SB3) from exc

#: regression losses by name
LOSSES = {"huber": F.smooth_l1_loss, "mse": F.mse_loss}
#: learning-rate decays by kind, and the keys each takes besides ``"kind"``
LR_DECAYS: dict[str, tuple[str, ...]] = {"inverse": ("timescale",),
                                         "linear": ("timesteps", "final")}
#: On a ``Discrete`` observation space of at most this many states, the target network's soft
#: values are tabulated over all states once per target update (not recomputed on every batch).
SOFT_VALUE_TABLE_MAX_STATES = 4096


def check_lr_decay(lr_decay: dict[str, Any] | None) -> dict[str, Any] | None:
    """Validate SoftDQN's ``lr_decay`` (plain data) and return a copy with float values.

    ``{"kind": "inverse", "timescale": τ}`` (τ > 0) scales the learning rate by
    ``1 / (1 + t/τ)``; ``{"kind": "linear", "timesteps": T, "final": f}`` (T > 0,
    0 ≤ f ≤ 1) by ``1 − (1 − f) t/T`` up to ``T``, then ``f``. ``t`` counts the environment
    transitions since the cold start (SB3's ``num_timesteps``), so the decay continues across
    warm-started calls. ``None``: no decay.

    Raises:
        ValueError: naming ``lr_decay``, for an unknown kind, missing or unknown keys, or a
            value out of range.
    """
    if lr_decay is None:
        return None
    if not isinstance(lr_decay, dict) or lr_decay.get("kind") not in LR_DECAYS:
        raise ValueError(f"lr_decay must be None or a dict with 'kind' one of "
                         f"{sorted(LR_DECAYS)}; got {lr_decay!r}")
    kind = lr_decay["kind"]
    keys = set(lr_decay) - {"kind"}
    if keys != set(LR_DECAYS[kind]):
        raise ValueError(f"lr_decay of kind {kind!r} takes the keys {list(LR_DECAYS[kind])}; "
                         f"got {sorted(keys)}")
    checked: dict[str, Any] = {"kind": kind}
    for key in LR_DECAYS[kind]:
        name, value = f"lr_decay[{key!r}]", lr_decay[key]
        checked[key] = (check_float(name, value, 0.0, 1.0) if key == "final"
                        else check_float(name, value, 0.0, low_open=True))
    return checked


def lr_decay_factor(lr_decay: dict[str, Any] | None, timesteps: int) -> float:
    """The factor ``lr_decay`` (checked by :func:`check_lr_decay`) applies to the learning rate
    after ``timesteps`` environment transitions (1 for ``None``)."""
    if lr_decay is None:
        return 1.0
    if lr_decay["kind"] == "inverse":
        return 1.0 / (1.0 + timesteps / lr_decay["timescale"])
    final, fraction = lr_decay["final"], min(timesteps / lr_decay["timesteps"], 1.0)
    return 1.0 - (1.0 - final) * fraction


def soft_bellman_target(rewards: th.Tensor, dones: th.Tensor, discounts: float | th.Tensor,
                        next_q_values: th.Tensor, lam: float) -> th.Tensor:
    """``r + γ (1 − done) λ logΣ_a' exp(Q(s', a')/λ)`` for a batch.

    Args:
        rewards, dones: ``(batch, 1)``; ``dones`` is 1 for terminations only (SB3's replay buffer
            keeps time-limit truncations bootstrapped).
        discounts: ``γ`` (a float or ``(batch, 1)``).
        next_q_values: ``(batch, n_actions)`` target-network values at ``s'``.
        lam: entropy weight λ > 0.
    """
    return bellman_backup(rewards, dones, discounts, soft_value(next_q_values, lam)[:, None])


def soft_value(q_values: th.Tensor, lam: float) -> th.Tensor:
    """``λ logΣ_a exp(Q(s, a)/λ)`` over the last axis."""
    return lam * th.logsumexp(q_values / lam, dim=-1)


def bellman_backup(rewards: th.Tensor, dones: th.Tensor, discounts: float | th.Tensor,
                   next_values: th.Tensor) -> th.Tensor:
    """``r + γ (1 − done) V(s')`` for a batch: every ``(batch, 1)`` (``discounts`` may be a
    float); ``dones`` is 1 for terminations only."""
    return rewards + (1 - dones) * discounts * next_values


def soft_double_target(rewards: th.Tensor, dones: th.Tensor, discounts: float | th.Tensor,
                       next_q_target: th.Tensor, next_q_online: th.Tensor,
                       lam: float) -> th.Tensor:
    """``r + γ (1 − done) Σ_a' π(a'|s') (Q_target(s', a') − λ log π(a'|s'))`` with
    ``π = softmax(Q_online(s')/λ)``: the soft value of the online network's Boltzmann policy,
    evaluated by the target network (the soft analogue of double DQN). It equals
    :func:`soft_bellman_target` when the two networks agree, and it does not select actions by
    the same noisy values it evaluates them with (the source of Q-learning's overestimation).
    """
    log_pi = th.log_softmax(next_q_online / lam, dim=1)
    next_values = (log_pi.exp() * (next_q_target - lam * log_pi)).sum(dim=1, keepdim=True)
    return bellman_backup(rewards, dones, discounts, next_values)


def conservative_penalty(q_values: th.Tensor, actions: th.Tensor, lam: float) -> th.Tensor:
    """``mean_i (λ logΣ_a exp(Q(s_i, a)/λ) − Q(s_i, a_i))``: the soft conservative penalty.

    Its gradient in ``Q(s_i, ·)`` is ``(softmax(Q(s_i, ·)/λ) − onehot(a_i)) / batch``, so it
    vanishes in expectation over actions drawn from the network's own Boltzmann policy.

    Args:
        q_values: ``(batch, n_actions)`` Q-values of every action.
        actions: ``(batch, 1)`` indices of the replayed actions.
        lam: entropy weight λ > 0.
    """
    taken = th.gather(q_values, dim=1, index=actions.long().reshape(-1, 1))
    return (soft_value(q_values, lam)[:, None] - taken).mean()


def boltzmann_probs(q_values: th.Tensor, lam: float, epsilon: float = 0.0) -> th.Tensor:
    """``(1 − ε) softmax(Q/λ) + ε/|A|`` over the last axis."""
    probs = th.softmax(q_values / lam, dim=-1)
    if epsilon > 0:
        probs = (1 - epsilon) * probs + epsilon / q_values.shape[-1]
    return probs


class SoftDQN(DQN):
    """Entropy-regularised DQN: soft Bellman targets and a Boltzmann behaviour policy.

    :param policy: the policy model (``"MlpPolicy"``, ``"CnnPolicy"``, ...), as for DQN.
    :param env: the environment (``Discrete`` actions).
    :param lam: entropy weight λ > 0: the temperature of the soft value ``λ logΣ exp(Q/λ)`` and
        of the Boltzmann policy ``softmax(Q/λ)``.
    :param loss: regression loss, ``"huber"`` (DQN's) or ``"mse"`` (the paper's authors').
    :param exploration_initial_eps: weight of uniform actions mixed into the Boltzmann policy at
        the start of training ...
    :param exploration_final_eps: ... and at the end of ``exploration_fraction`` of it
        (default 0: the pure Boltzmann policy afterwards).
    :param double_q: regress on :func:`soft_double_target` (the online network's Boltzmann
        policy scored by the target network) instead of :func:`soft_bellman_target`.
    :param conservative_weight: weight ``α ≥ 0`` of a conservative penalty added to the loss,
        ``α · mean(λ logΣ_a exp(Q(s, a)/λ) − Q(s, a_data))`` over the batch (the soft form of
        conservative Q-learning, Kumar et al. 2020). Its gradient ``α (softmax(Q(s, ·)/λ) −
        onehot(a_data))`` is zero in expectation when the replayed actions follow the network's
        own Boltzmann policy, and otherwise lowers the actions the network prefers but the data
        do not show: the values that the soft target ``λ logΣ exp(Q/λ)`` picks up and no
        transition corrects. ``0`` (default): no penalty.
    :param lr_decay: a decaying step size as plain data (:func:`check_lr_decay`):
        ``{"kind": "inverse", "timescale": τ}`` multiplies ``learning_rate`` by
        ``1/(1 + t/τ)``, ``{"kind": "linear", "timesteps": T, "final": f}`` by a factor going
        linearly from 1 to ``f`` over ``T`` transitions; ``t`` is ``num_timesteps``, so the
        decay continues across warm starts (SB3's own schedules restart their progress with
        each ``learn`` call). ``None`` (default): ``learning_rate`` as given.
    :param kwargs: every other argument of :class:`stable_baselines3.DQN` (``learning_rate``,
        ``buffer_size``, ``batch_size``, ``gamma``, ``target_update_interval``, ``seed``, ...).
        ``n_steps`` must stay 1: n-step returns would drop the entropy bonuses of the skipped
        states.
    """

    policy_aliases = {**DQN.policy_aliases, "JointMlpPolicy": JointActionDQNPolicy,
                      "AfterstateMlpPolicy": AfterstateDQNPolicy}

    def __init__(self, policy: Any, env: Any, lam: float = 0.1, loss: str = "huber",
                 exploration_initial_eps: float = 1.0, exploration_final_eps: float = 0.0,
                 double_q: bool = False, lr_decay: dict[str, Any] | None = None,
                 conservative_weight: float = 0.0, **kwargs: Any):
        lam = check_float("lam", lam, 0.0, low_open=True)
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}; got {loss!r}")
        if kwargs.get("n_steps", 1) != 1:
            raise ValueError(f"SoftDQN needs n_steps=1 (n-step returns omit the entropy bonus "
                             f"of intermediate states); got n_steps={kwargs['n_steps']!r}")
        if not isinstance(double_q, (bool, np.bool_)):
            raise TypeError(f"double_q must be a bool; got {double_q!r}")
        self.lam, self.loss, self.double_q = float(lam), loss, bool(double_q)
        self.conservative_weight = check_float("conservative_weight", conservative_weight, 0.0)
        self.lr_decay = check_lr_decay(lr_decay)
        super().__init__(policy, env, exploration_initial_eps=exploration_initial_eps,
                         exploration_final_eps=exploration_final_eps, **kwargs)

    def current_learning_rate(self) -> float:
        """The step size of the next gradient steps: SB3's ``learning_rate`` schedule times the
        ``lr_decay`` factor at ``num_timesteps``."""
        base = self.lr_schedule(self._current_progress_remaining)
        return float(base) * lr_decay_factor(self.lr_decay, self.num_timesteps)

    def _update_learning_rate(self, optimizers: Any) -> None:
        """SB3's update, with :meth:`current_learning_rate` as the rate."""
        rate = self.current_learning_rate()
        self.logger.record("train/learning_rate", rate)
        for optimizer in optimizers if isinstance(optimizers, list) else [optimizers]:
            for group in optimizer.param_groups:
                group["lr"] = rate

    def train(self, gradient_steps: int, batch_size: int = 100) -> None:
        """DQN's update with the soft Bellman target (see :func:`soft_bellman_target`)."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        loss_fn = LOSSES[self.loss]
        losses = []
        for _ in range(gradient_steps):
            data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)
            discounts = data.discounts if data.discounts is not None else self.gamma
            with th.no_grad():
                if self.double_q:
                    target = soft_double_target(data.rewards, data.dones, discounts,
                                                self.q_net_target(data.next_observations),
                                                self.q_net(data.next_observations), self.lam)
                else:
                    target = bellman_backup(data.rewards, data.dones, discounts,
                                            self._next_soft_values(data.next_observations))
            if self.conservative_weight > 0:
                q_all = self._online_q_all(data.observations)
                current = th.gather(q_all, dim=1, index=data.actions.long())
                loss = loss_fn(current, target) + self.conservative_weight * \
                    conservative_penalty(q_all, data.actions, self.lam)
            else:
                current = self._q_taken(data.observations, data.actions)
                loss = loss_fn(current, target)
            losses.append(loss.item())
            self.policy.optimizer.zero_grad()
            loss.backward()
            th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
            self.policy.optimizer.step()
        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/loss", np.mean(losses))

    def _q_taken(self, observations: th.Tensor, actions: th.Tensor) -> th.Tensor:
        """``(batch, 1)`` online ``Q(s, a)`` of the batch's actions (a joint-action head scores
        only those actions; any other network scores all and gathers)."""
        at = getattr(self.q_net, "q_values_at", None)
        if at is not None:
            return at(observations, actions)
        return th.gather(self.q_net(observations), dim=1, index=actions.long())

    def _online_q_all(self, observations: th.Tensor) -> th.Tensor:
        """``(batch, n_actions)`` online Q-values of every action (with gradients). On a small
        ``Discrete`` observation space every state is scored once and the rows gathered: one
        ``(n_states, n_actions)`` pass instead of ``(batch, n_actions)``."""
        n_states = self._tabulated_states()
        if n_states is not None and n_states <= len(observations):
            return self.q_net(self._every_state(n_states))[observations.long().reshape(-1)]
        return self.q_net(observations)

    def _tabulated_states(self) -> int | None:
        """The number of states of a ``Discrete`` observation space of at most
        :data:`SOFT_VALUE_TABLE_MAX_STATES` (None otherwise): few enough to score every state
        and gather rows instead of scoring a batch."""
        space = self.observation_space
        if isinstance(space, spaces.Discrete) and space.n <= SOFT_VALUE_TABLE_MAX_STATES:
            return int(space.n)
        return None

    def _every_state(self, n_states: int) -> th.Tensor:
        """``(n_states, 1)`` observations ``0 .. n_states − 1``."""
        return th.arange(n_states, device=self.device).reshape(-1, 1)

    def _next_soft_values(self, next_observations: th.Tensor) -> th.Tensor:
        """``(batch, 1)`` soft values ``λ logΣ_a' exp(Q_target(s', a')/λ)`` of the target network.

        On a small ``Discrete`` observation space (:data:`SOFT_VALUE_TABLE_MAX_STATES`) the
        target network is evaluated once on every state and the table is reused for as long as
        its parameters and buffers are unchanged (SB3 updates the parameters every
        ``target_update_interval`` transitions; an afterstate network's tables change with the
        leader's ``x``): one forward pass per target update instead of one per gradient step."""
        n_states = self._tabulated_states()
        if n_states is None:
            return soft_value(self.q_net_target(next_observations), self.lam)[:, None]
        params = [p.detach() for p in (*self.q_net_target.parameters(),
                                       *self.q_net_target.buffers())]
        cache = getattr(self, "_soft_value_cache", None)
        if cache is None or len(cache[0]) != len(params) or not all(
                saved.device == p.device and th.equal(saved, p)
                for saved, p in zip(cache[0], params)):
            table = soft_value(self.q_net_target(self._every_state(n_states)), self.lam)
            cache = self._soft_value_cache = ([p.clone() for p in params], table)
        return cache[1][next_observations.long().reshape(-1)][:, None]

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_soft_value_cache"]

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None,
                deterministic: bool = False) -> tuple[np.ndarray, Any]:
        """A Boltzmann action ``a ~ (1 − ε) softmax(Q(s, ·)/λ) + ε uniform`` (ε: the current
        exploration rate); the greedy action if ``deterministic``."""
        if deterministic:
            return self.policy.predict(observation, state, episode_start, deterministic=True)
        self.policy.set_training_mode(False)
        obs_tensor, vectorized = self.policy.obs_to_tensor(observation)
        with th.no_grad():
            probs = boltzmann_probs(self.q_net(obs_tensor), self.lam, self.exploration_rate)
            actions = th.multinomial(probs, 1)[:, 0].cpu().numpy()
        return (actions if vectorized else actions[0]), state


class SoftDQNFollower(SB3Follower):
    """The soft DQN follower: :class:`SoftDQN` trained on ``problem.follower_env(x, ξ)``.

    An :class:`~bilevel_envs.followers.sb3.SB3Follower` with ``algo=SoftDQN`` (warm starts,
    seeding, one torch thread and the response's Boltzmann policy ``softmax(Q/λ)`` are the SB3
    follower's). ``lam`` and ``gamma`` default to the problem's.

    Args:
        total_timesteps: environment steps per warm-started call.
        algo_kwargs: keyword arguments of :class:`SoftDQN` (``lam``, ``loss``,
            ``learning_rate``, ``lr_decay``, ``buffer_size``, ``learning_starts``, ...).
        policy: the SB3 policy (``"MlpPolicy"``).
        warmup_timesteps: environment steps of the first (cold) call; ``total_timesteps`` if None.
        n_envs: copies of the follower env in the agent's ``DummyVecEnv``.
        episode_steps: truncate the training episodes after this many steps (``None``: the
            env's time limit; see :class:`~bilevel_envs.followers.sb3.SB3Follower`).
        exploring_starts: start the training episodes from uniformly random observations
            (see :class:`~bilevel_envs.followers.sb3.SB3Follower`).
    """

    name = "soft_dqn"

    def __init__(self, total_timesteps: int = 20_000, algo_kwargs: dict[str, Any] | None = None,
                 policy: str = "MlpPolicy", warmup_timesteps: int | None = None,
                 n_envs: int = 1, episode_steps: int | None = None,
                 exploring_starts: bool = False):
        super().__init__(algo="SoftDQN", total_timesteps=total_timesteps,
                         algo_kwargs=algo_kwargs, policy=policy,
                         warmup_timesteps=warmup_timesteps, n_envs=n_envs,
                         episode_steps=episode_steps, exploring_starts=exploring_starts)

    def _build(self, problem: Any, env: Any, seed: int | None, x: np.ndarray,
               context: Any) -> SoftDQN:
        """As the SB3 follower's, with the tables a structured Q-network needs filled in from
        the problem: ``policy="JointMlpPolicy"`` takes the problem's
        ``follower_action_features()`` (one-hot actions if it has none; a string
        ``policy_kwargs["action_features"]`` names the problem's encoding, e.g.
        ``"values+onehot"`` on tax design); ``policy="AfterstateMlpPolicy"`` takes
        ``problem.follower_afterstates(x, context)`` and ``discount=problem.gamma``."""
        if self.policy not in ("JointMlpPolicy", "AfterstateMlpPolicy"):
            return super()._build(problem, env, seed, x, context)
        policy_kwargs = dict(self.algo_kwargs.get("policy_kwargs") or {})
        if self.policy == "JointMlpPolicy":
            features = policy_kwargs.get("action_features")
            if features is None or isinstance(features, str):
                policy_kwargs["action_features"] = joint_action_features(problem, features)
        else:
            rewards, afterstates = follower_afterstates(problem, x, context)
            policy_kwargs.update(rewards=rewards, afterstates=afterstates,
                                 discount=self.algo_kwargs.get("gamma", problem.gamma))
        saved = self.algo_kwargs
        self.algo_kwargs = {**saved, "policy_kwargs": policy_kwargs}
        try:
            return super()._build(problem, env, seed, x, context)
        finally:
            self.algo_kwargs = saved

    def _move(self, model: SoftDQN, problem: Any, x: np.ndarray, context: Any) -> None:
        """An afterstate network gets the reward and afterstate tables of the new ``x``."""
        if isinstance(model.policy, AfterstateDQNPolicy):
            model.policy.set_afterstates(*follower_afterstates(problem, x, context))


def follower_afterstates(problem: Any, x: np.ndarray, context: Any
                         ) -> tuple[np.ndarray, np.ndarray]:
    """``problem.follower_afterstates(x, context)``: the reward ``(S, A)`` and afterstate
    features ``(S, A, k)`` tables of an :class:`~.afterstate_q.AfterstateQNetwork`.

    Raises:
        ValueError: if the problem does not define them.
    """
    tables = getattr(problem, "follower_afterstates", None)
    if tables is None:
        raise ValueError(f"policy='AfterstateMlpPolicy' needs a problem with "
                         f"follower_afterstates(x, context) (a finite follower MDP whose "
                         f"transitions depend on (s, a) through an afterstate, e.g. tax "
                         f"design with tabular=True); {problem!r} has none")
    return tables(x, context)


def joint_action_features(problem: Any, encoding: str | None = None) -> np.ndarray:
    """``problem.follower_action_features()`` if the problem defines it (e.g. tax design: the
    hours and consumption values of each joint action), else the one-hot code of each action.
    ``encoding`` is passed on to ``follower_action_features`` (a problem without that method
    accepts only ``None``).

    Raises:
        ValueError: for an ``encoding`` the problem does not offer.
    """
    features = getattr(problem, "follower_action_features", None)
    if features is not None:
        table = features() if encoding is None else features(encoding)
        return np.asarray(table, dtype=np.float32)
    if encoding is not None:
        raise ValueError(f"action_features {encoding!r} names an encoding, but {problem!r} has "
                         "no follower_action_features(); pass an (n_actions, k) table")
    return np.eye(int(problem.follower_action_space.n), dtype=np.float32)
