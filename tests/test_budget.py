"""Budget accounting (bilevel_envs.budget, LeaderEnv.budget): exact hand counts per step and per
leader, what counts against the leader and what does not (evaluation)."""

import warnings

import gymnasium as gym
import numpy as np
import pytest

from bilevel_envs import LeaderEnv
from bilevel_envs.budget import Budget, CountedSampler
from bilevel_envs.envs.garnet import GarnetProblem
from bilevel_envs.followers import FollowerResponse
from bilevel_envs.followers.soft_vi import SoftValueIteration
from leaders import AMD, HPGD, HPGDRTQ, ZeroOrder

N_FOLLOWERS, N_ENVS, N_STEPS = 2, 3, 40


def garnet_env(**kwargs):
    kwargs = {"n_followers": N_FOLLOWERS, "n_envs": N_ENVS, "n_rollout_steps": N_STEPS, **kwargs}
    return LeaderEnv(GarnetProblem(), **kwargs)


# ---------------------------------------------------------------------------- the counter
def test_budget_arithmetic_and_validation():
    a, b = Budget(3, 4, 5), Budget(transitions=1, model_queries=2)
    assert a + b == Budget(4, 4, 7)
    assert (a + b).sample_cost == 8
    assert a.as_dict() == {"transitions": 3, "follower_updates": 4, "model_queries": 5}
    assert Budget.from_dict(a.as_dict()) == a
    assert sum([a, b], Budget()) == a + b
    for bad in ({"transitions": -1}, {"follower_updates": 1.5}, {"model_queries": True}):
        with pytest.raises(ValueError, match=f"Budget.{next(iter(bad))} must be an integer"):
            Budget(**bad)
    with pytest.raises(ValueError, match="unknown budget fields"):
        Budget.from_dict({"samples": 3})
    with pytest.raises(TypeError):
        a + 1  # noqa: B018


# ---------------------------------------------------------------------------- the leader env
def test_soft_vi_steps_cost_their_rollouts_and_one_update_per_solve():
    env = garnet_env(render_mode="ansi")
    env.reset(seed=0)
    per_step = Budget(transitions=N_FOLLOWERS * N_ENVS * N_STEPS, follower_updates=N_FOLLOWERS)
    infos = [env.step(np.zeros(4))[4] for _ in range(4)]
    assert all(Budget.from_dict(i["budget"]) == per_step for i in infos)
    assert env.last_step.budget == per_step
    assert env.budget == Budget(4 * N_FOLLOWERS * N_ENVS * N_STEPS, 4 * N_FOLLOWERS, 0)
    assert "budget used: transitions 960, follower_updates 8, model_queries 0" in env.render()
    env.reset(seed=1)  # an episode boundary is not a new run
    assert env.budget.transitions == 960
    assert env.reset_budget().transitions == 960 and env.budget == Budget()


def test_soft_q_follower_adds_its_own_samples_and_updates():
    n_steps, n_chains = 30, 4
    env = garnet_env(follower="soft_q", follower_kwargs={"n_steps": n_steps, "n_chains": n_chains})
    env.reset(seed=0)
    learning = n_steps * n_chains
    for _ in range(3):
        info = env.step(np.zeros(4))[4]
    assert info["budget"] == {"transitions": N_FOLLOWERS * (N_ENVS * N_STEPS + learning),
                              "follower_updates": N_FOLLOWERS * learning, "model_queries": 0}
    assert env.budget.follower_updates == 3 * N_FOLLOWERS * learning


def test_an_exact_reward_counts_one_model_query_per_follower():
    env = garnet_env(contexts="all", n_rollout_steps=0, objective="exact")
    env.reset(seed=0)
    info = env.step(np.zeros(4))[4]
    assert info["budget"] == {"transitions": 0, "follower_updates": 2, "model_queries": 2}


def test_four_rooms_hand_count():
    env = gym.make("bilevel/FourRoomsShaping-v0", contexts="all", n_envs=2, n_rollout_steps=25)
    env.reset(seed=0)
    for _ in range(3):
        env.step(np.zeros(105))
    # two goals served every step, each solved exactly once
    assert env.unwrapped.budget == Budget(transitions=3 * 2 * 2 * 25, follower_updates=3 * 2)


def test_budget_survives_a_checkpoint_state_and_old_states_start_at_zero():
    env = garnet_env()
    env.reset(seed=0)
    env.step(np.zeros(4))
    data, arrays = env.get_state()
    other = garnet_env()
    other.set_state(data, arrays)
    assert other.budget == env.budget
    other.set_state({k: v for k, v in data.items() if k != "budget"}, arrays)
    assert other.budget == Budget()
    with pytest.raises(ValueError, match="Budget.transitions must be an integer >= 0"):
        other.set_state({**data, "budget": {**data["budget"], "transitions": -3}}, arrays)
    with pytest.raises(ValueError, match="unknown budget fields"):
        other.set_state({**data, "budget": {"samples": 1}}, arrays)


def test_exact_model_and_charge_count_and_check_their_input():
    env = garnet_env()
    env.reset(seed=0)
    model = env.exact_model(np.zeros(4), 1)
    assert model.n_states == 6 and env.budget == Budget(model_queries=1)
    env.charge(Budget(transitions=7))
    assert env.budget == Budget(transitions=7, model_queries=1)
    with pytest.raises(TypeError, match="cost must be a Budget"):
        env.charge({"transitions": 1})
    with pytest.raises(ValueError, match="x"):
        env.exact_model(np.full(4, 99.0), 0)


def test_rollouts_through_a_steps_oracle_are_charged_afterwards():
    env = garnet_env()
    env.reset(seed=0)
    env.step(np.zeros(4))
    oracle = env.last_step.followers[0].oracle
    assert isinstance(oracle, CountedSampler)
    before = env.budget
    rollouts = oracle.rollout(np.random.default_rng(0), 5, 7)
    assert env.budget == before + Budget(transitions=rollouts.n_transitions)
    assert rollouts.n_transitions == 35
    assert oracle.policy is env.last_step.followers[0].response.policy  # attributes pass through


class _SilentFollower(SoftValueIteration):
    """A follower that does not report its cost (a third-party follower written before)."""

    def respond(self, problem, x, context, seed=None, warm_start=None):
        r = super().respond(problem, x, context, seed=seed, warm_start=warm_start)
        return FollowerResponse(policy=r.policy, warm_start=r.warm_start, model=r.model)


def test_a_follower_without_cost_counts_nothing_and_warns_once():
    env = garnet_env(follower=_SilentFollower())
    env.reset(seed=0)
    with pytest.warns(UserWarning, match="does not report its cost"):
        env.step(np.zeros(4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env.step(np.zeros(4))  # no second warning
    assert env.budget == Budget(transitions=2 * N_FOLLOWERS * N_ENVS * N_STEPS)


# ---------------------------------------------------------------------------- the leaders
def test_hpgd_is_charged_per_step_and_never_queries_the_model():
    env = garnet_env()
    leader = HPGD(env, seed=0).learn(3, eval_every=1)
    per_iteration = N_FOLLOWERS * N_ENVS * N_STEPS
    assert env.budget == Budget(3 * per_iteration, 3 * N_FOLLOWERS, 0)
    leader.exact_objective()  # evaluation is not charged
    assert env.budget.model_queries == 0
    assert leader.history["budget_transitions"].tolist() == [per_iteration * k
                                                             for k in (1, 2, 3)]
    assert HPGD.track == "sample" and ZeroOrder.track == "sample"


def test_hpgd_paper_estimator_restarts_are_charged_beyond_the_steps():
    env = garnet_env(n_followers=1)
    HPGD(env, seed=0, estimator="paper", n_samples=2).learn(2)
    assert env.budget.transitions > 2 * N_ENVS * N_STEPS
    assert env.budget.model_queries == 0


@pytest.mark.parametrize("inner", ["sweeps", "exact"])
def test_amd_queries_one_model_per_iteration_and_evaluation_is_free(inner):
    env = garnet_env()
    leader = AMD(env, seed=0, inner=inner, inner_iterations=5).learn(4, eval_every=2)
    leader.exact_objective()
    assert env.budget == Budget(model_queries=4)
    assert AMD.track == "model"


def test_rtq_counts_its_model_its_soft_q_run_and_its_samples():
    env = garnet_env()
    leader = HPGDRTQ(env, seed=0, levels=3, steps_scale=2, soft_q_kwargs={"n_chains": 2})
    leader.learn(3)
    steps = leader.history["lower_level_steps"]
    assert env.budget.model_queries == 3 and HPGDRTQ.track == "model"
    assert env.budget.follower_updates == int(steps.sum()) * 2
    # Alg. 5 samples at least one transition per estimate on top of the soft Q-learning run
    assert env.budget.transitions > env.budget.follower_updates


@pytest.mark.parametrize("algo, kwargs, timesteps, updates", [
    # DQN: a gradient step every 4 environment steps once learning starts
    ("DQN", {"learning_starts": 0, "train_freq": 4, "buffer_size": 100}, 32, 8),
    # PPO: 2 rollouts of 16 steps, 2 epochs of 2 minibatches of 8 each
    ("PPO", {"n_steps": 16, "batch_size": 8, "n_epochs": 2}, 32, 8),
])
def test_sb3_follower_reports_its_timesteps_and_gradient_steps(algo, kwargs, timesteps, updates):
    pytest.importorskip("stable_baselines3")
    from bilevel_envs.followers.sb3 import SB3Follower

    follower = SB3Follower(algo=algo, total_timesteps=timesteps, algo_kwargs=kwargs)
    problem = GarnetProblem()
    first = follower.respond(problem, np.zeros(4), 0, seed=0)
    assert first.cost == Budget(transitions=timesteps, follower_updates=updates)
    second = follower.respond(problem, np.zeros(4), 0, seed=1, warm_start=first.warm_start)
    assert second.cost == first.cost  # a warm start is charged for its own call only
