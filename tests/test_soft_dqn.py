"""SoftDQN: the soft Bellman target, the Boltzmann policy, learning on a tiny MDP, the follower."""

import math

import gymnasium as gym
import numpy as np
import pytest

import bilevel_envs  # noqa: F401  (registers the env ids)
from bilevel_envs.envs.garnet import GarnetProblem
from bilevel_envs.tabular import soft_policy_iteration

th = pytest.importorskip("torch")
pytest.importorskip("stable_baselines3")

from bilevel_envs.followers import make_follower  # noqa: E402
from bilevel_envs.followers.sb3 import SB3Policy  # noqa: E402
from bilevel_envs.followers.soft_dqn import (  # noqa: E402
    SoftDQN,
    SoftDQNFollower,
    boltzmann_probs,
    conservative_penalty,
    soft_bellman_target,
)


def _garnet_env(lam=1.0):
    problem = GarnetProblem(lam=lam)
    return problem, problem.follower_env(np.zeros(4), 0)


def test_soft_bellman_target_by_hand():
    rewards = th.tensor([[0.5], [-1.0], [2.0]])
    dones = th.tensor([[0.0], [1.0], [0.0]])
    next_q = th.tensor([[1.0, 2.0], [5.0, 5.0], [-0.3, 0.1]])
    lam, gamma = 0.5, 0.9
    target = soft_bellman_target(rewards, dones, gamma, next_q, lam)
    v0 = lam * math.log(math.exp(1.0 / lam) + math.exp(2.0 / lam))
    v2 = lam * math.log(math.exp(-0.3 / lam) + math.exp(0.1 / lam))
    expected = [[0.5 + gamma * v0], [-1.0], [2.0 + gamma * v2]]  # terminal: no continuation
    np.testing.assert_allclose(target.numpy(), expected, rtol=1e-6)


def test_train_regresses_q_on_the_soft_target():
    """One gradient step on a buffer holding one transition: the recorded loss is the squared
    error between Q(s, a) and r + γ λ logΣexp(Q_target(s')/λ), computed here by hand."""
    _, env = _garnet_env()
    model = SoftDQN("MlpPolicy", env, lam=0.7, gamma=0.8, loss="mse", batch_size=4,
                    learning_starts=0, seed=0, device="cpu")
    model.learn(1)  # sets up the logger
    model.replay_buffer.reset()
    obs, next_obs = np.array([[2]]), np.array([[4]])
    model.replay_buffer.add(obs, next_obs, np.array([[1]]), np.array([0.3]), np.array([False]),
                            [{}])
    to_tensor = model.policy.obs_to_tensor
    with th.no_grad():
        q_sa = model.q_net(to_tensor(np.array([2]))[0])[0, 1].item()
        next_q = model.q_net_target(to_tensor(np.array([4]))[0])[0].double().numpy()
    target = 0.3 + 0.8 * 0.7 * np.log(np.exp(next_q / 0.7).sum())
    model.train(gradient_steps=1, batch_size=4)
    assert model.logger.name_to_value["train/loss"] == pytest.approx((q_sa - target) ** 2,
                                                                      rel=1e-5)


def test_conservative_penalty_by_hand():
    """Value ``mean(λ logΣexp(Q/λ) − Q(s, a))`` and gradient ``(softmax(Q/λ) − onehot(a))/B``;
    averaged over actions weighted by the Boltzmann policy itself the gradient is exactly 0 (the
    penalty leaves on-policy data alone), and with λ 5 % off it is not."""
    lam = 0.4
    q = th.tensor([[0.2, -1.0, 0.7], [1.5, 1.4, -0.2]], dtype=th.float64, requires_grad=True)
    actions = th.tensor([[2], [0]])
    penalty = conservative_penalty(q, actions, lam)
    rows = q.detach().numpy()
    by_hand = np.mean([lam * np.log(np.exp(rows[i] / lam).sum()) - rows[i, a]
                       for i, a in enumerate([2, 0])])
    assert penalty.item() == pytest.approx(by_hand, rel=1e-12)
    penalty.backward()
    probs = th.softmax(q.detach() / lam, dim=1).numpy()
    np.testing.assert_allclose(q.grad.numpy(), (probs - np.eye(3)[[2, 0]]) / 2, atol=1e-12)

    def expected_gradient(temperature):
        """``Σ_a π(a|s) ∇ penalty(s, a)`` for one state, ``π`` the Boltzmann policy at λ."""
        row = q.detach()[:1]
        weights = th.softmax(row / lam, dim=1)[0]
        total = th.zeros_like(row)
        for a in range(3):
            leaf = row.clone().requires_grad_(True)
            conservative_penalty(leaf, th.tensor([[a]]), temperature).backward()
            total += weights[a] * leaf.grad
        return total.abs().max().item()

    assert expected_gradient(lam) < 1e-12
    assert expected_gradient(1.05 * lam) > 1e-3


def test_train_adds_the_conservative_penalty():
    """With ``conservative_weight=α`` the recorded loss is the squared soft-Bellman error plus
    ``α (λ logΣexp(Q(s)/λ) − Q(s, a))``, computed here by hand for one stored transition."""
    _, env = _garnet_env()
    lam, alpha = 0.7, 0.3
    model = SoftDQN("MlpPolicy", env, lam=lam, gamma=0.8, loss="mse", batch_size=4,
                    learning_starts=0, seed=0, device="cpu", conservative_weight=alpha)
    model.learn(1)
    model.replay_buffer.reset()
    model.replay_buffer.add(np.array([[2]]), np.array([[4]]), np.array([[1]]), np.array([0.3]),
                            np.array([False]), [{}])
    to_tensor = model.policy.obs_to_tensor
    with th.no_grad():
        q = model.q_net(to_tensor(np.array([2]))[0])[0].double().numpy()
        next_q = model.q_net_target(to_tensor(np.array([4]))[0])[0].double().numpy()
    target = 0.3 + 0.8 * lam * np.log(np.exp(next_q / lam).sum())
    penalty = lam * np.log(np.exp(q / lam).sum()) - q[1]
    model.train(gradient_steps=1, batch_size=4)
    assert model.logger.name_to_value["train/loss"] == pytest.approx(
        (q[1] - target) ** 2 + alpha * penalty, rel=1e-5)


def test_soft_value_table_follows_the_target_network():
    """On a Discrete observation space the target's soft values come from a table over all
    states; it must be rebuilt when SB3 copies the online network into the target. Two training
    calls on one stored transition, the target replaced in between: each loss matches its own
    target by hand (the two hand targets differ, so a stale table fails the second check)."""
    from stable_baselines3.common.utils import polyak_update

    _, env = _garnet_env()
    model = SoftDQN("MlpPolicy", env, lam=0.7, gamma=0.8, loss="mse", batch_size=2,
                    learning_starts=0, seed=0, device="cpu", learning_rate=0.5)
    model.learn(1)
    model.replay_buffer.reset()
    model.replay_buffer.add(np.array([[2]]), np.array([[4]]), np.array([[1]]), np.array([0.3]),
                            np.array([False]), [{}])
    to_tensor = model.policy.obs_to_tensor
    targets = []
    for _ in range(2):
        with th.no_grad():
            q_sa = model.q_net(to_tensor(np.array([2]))[0])[0, 1].item()
            next_q = model.q_net_target(to_tensor(np.array([4]))[0])[0].double().numpy()
        targets.append(0.3 + 0.8 * 0.7 * np.log(np.exp(next_q / 0.7).sum()))
        model.train(gradient_steps=1, batch_size=2)
        assert model.logger.name_to_value["train/loss"] == pytest.approx(
            (q_sa - targets[-1]) ** 2, rel=1e-5)
        polyak_update(model.q_net.parameters(), model.q_net_target.parameters(), 1.0)
    assert abs(targets[1] - targets[0]) > 1e-3


def test_predict_samples_the_boltzmann_policy():
    """Frequencies of 4,000 draws lie within 4 standard errors of softmax(Q/λ) mixed with ε."""
    _, env = _garnet_env()
    model = SoftDQN("MlpPolicy", env, lam=0.05, seed=0, device="cpu")
    obs = np.full(4_000, 3)
    with th.no_grad():
        q = model.q_net(model.policy.obs_to_tensor(np.array([3]))[0])
    for eps in (0.0, 0.3):
        model.exploration_rate = eps
        actions, _ = model.predict(obs)
        freq = np.bincount(actions, minlength=3) / obs.size
        p = boltzmann_probs(q, 0.05, eps)[0].double().numpy()
        assert np.all(np.abs(freq - p) <= 4 * np.sqrt(p * (1 - p) / obs.size) + 1e-12)
    greedy, _ = model.predict(3, deterministic=True)
    assert int(greedy) == int(q.argmax())


def test_learns_the_soft_optimal_policy_on_a_garnet():
    """2,000 steps on Garnet (6 states, 3 actions, γ = 0.9, λ = 1): ‖softmax(Q/λ) − π*‖∞ ≤ 0.1,
    a quarter of the uniform policy's distance to π* (0.45). Measured over 6 seeds:
    0.019–0.036."""
    problem = GarnetProblem(lam=1.0)
    pi_star = soft_policy_iteration(problem.tabular(np.zeros(4), 0), problem.lam).pi
    follower = SoftDQNFollower(total_timesteps=2_000, algo_kwargs={
        "learning_starts": 200, "learning_rate": 3e-3, "batch_size": 32,
        "target_update_interval": 200, "policy_kwargs": {"net_arch": [64]}})
    response = follower.respond(problem, np.zeros(4), 0, seed=0)
    pi = response.policy.action_probs(np.arange(6))
    assert np.abs(pi_star - 1 / 3).max() > 0.4
    assert np.abs(pi - pi_star).max() <= 0.1


def test_follower_through_the_leader_env_is_seeded():
    kwargs = dict(lam=0.003, follower="soft_dqn", n_envs=1, n_rollout_steps=50,
                  follower_kwargs={"total_timesteps": 128,
                                   "algo_kwargs": {"learning_starts": 32, "batch_size": 16,
                                                   "buffer_size": 1_000}})
    probs, stats = [], []
    for _ in range(2):
        env = gym.make("bilevel/FourRoomsShaping-v0", **kwargs)
        env.reset(seed=2)
        stats.append([env.step(np.zeros(105))[4]["follower_stats"] for _ in range(2)])
        response = env.unwrapped.last_step.followers[0].response
        probs.append(response.policy.action_probs(np.arange(104)))
    np.testing.assert_array_equal(probs[0], probs[1])
    assert stats[0] == stats[1] and stats[0][1][0]["algo"] == "SoftDQN"
    assert response.warm_start.lam == 0.003  # λ and γ come from the problem
    assert response.warm_start.gamma == 0.99


def test_save_and_load_keep_lam(tmp_path):
    _, env = _garnet_env()
    model = SoftDQN("MlpPolicy", env, lam=0.25, loss="mse", device="cpu")
    model.save(tmp_path / "soft_dqn")
    loaded = SoftDQN.load(tmp_path / "soft_dqn", device="cpu")
    assert (loaded.lam, loaded.loss) == (0.25, "mse")


@pytest.mark.parametrize("kwargs, pattern", [
    ({"lam": -1.0}, r"lam must be a finite number in \(0, inf\)"),
    ({"lam": "0.1"}, r"lam must be a finite number in \(0, inf\)"),
    ({"loss": "l1"}, r"loss must be one of \['huber', 'mse'\]"),
    ({"n_steps": 3}, r"SoftDQN needs n_steps=1"),
    ({"conservative_weight": -0.1}, r"conservative_weight must be a finite number in \[0, inf\)"),
    ({"conservative_weight": float("nan")}, r"conservative_weight must be .* in \[0, inf\)"),
    ({"conservative_weight": True}, r"conservative_weight must be .* in \[0, inf\)"),
    ({"conservative_weight": 10**400}, r"conservative_weight must be .* in \[0, inf\)"),
])
def test_bad_arguments_are_rejected(kwargs, pattern):
    _, env = _garnet_env()
    with pytest.raises(ValueError, match=pattern):
        SoftDQN("MlpPolicy", env, **kwargs)


def test_registry_builds_the_follower():
    follower = make_follower("soft_dqn", total_timesteps=10)
    assert isinstance(follower, SoftDQNFollower) and follower.algo == "SoftDQN"
    with pytest.raises(ValueError, match=r"total_timesteps must be an integer >= 1"):
        make_follower("soft_dqn", total_timesteps=0)


class _WideActionEnv(gym.Env):
    """A tax-design-like shape: one continuous observation, 1,250 discrete actions; the reward
    prefers actions near the middle. Episodes last 10 steps."""

    observation_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
    action_space = gym.spaces.Discrete(1_250)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.uniform(-1, 1, size=1).astype(np.float32), {}

    def step(self, action):
        self.t += 1
        reward = -abs(int(action) / 1_250 - 0.5)
        obs = self.np_random.uniform(-1, 1, size=1).astype(np.float32)
        return obs, reward, False, self.t >= 10, {}


@pytest.mark.parametrize("make_env", [lambda: gym.make("CartPole-v1"), _WideActionEnv])
def test_works_with_continuous_observations_and_many_actions(make_env):
    env = make_env()
    model = SoftDQN("MlpPolicy", env, lam=0.1, learning_starts=50, batch_size=16, seed=0,
                    device="cpu")
    model.learn(200)
    obs = np.stack([env.observation_space.sample() for _ in range(7)])
    probs = SB3Policy(model.policy, model.lam).action_probs(obs)
    assert probs.shape == (7, env.action_space.n)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=0, atol=1e-12)
