"""Rollouts and oracles: the tabular fast path, the generic Gymnasium path, the scans."""

import numpy as np
import pytest

from bilevel_envs._kernels import discounted_accumulation, discounted_returns
from bilevel_envs.envs.four_rooms.problem import FourRoomsShaping
from bilevel_envs.exact import ExactSolver
from bilevel_envs.followers import TabularPolicy
from bilevel_envs.oracles import GymOracle, TabularOracle, make_oracle
from bilevel_envs.rollouts import Rollouts


@pytest.fixture(scope="module")
def setup():
    problem = FourRoomsShaping(lam=0.003, beta=1.0)
    x = np.random.default_rng(0).normal(0, 0.5, size=105)
    _, sol, _ = ExactSolver(problem).solve(x)
    return problem, x, [TabularPolicy(sol.pi[c]) for c in (0, 1)]


def test_same_seed_same_rollouts_different_seed_different(setup):
    problem, x, policies = setup
    oracle = TabularOracle(problem, x, 1, policies[1])
    a = oracle.rollout(np.random.default_rng(7), 4, 300)
    b = oracle.rollout(np.random.default_rng(7), 4, 300)
    c = oracle.rollout(np.random.default_rng(8), 4, 300)
    for key, value in a.to_dict().items():
        np.testing.assert_array_equal(value, b.to_dict()[key])
    assert not np.array_equal(a.obs, c.obs)


def test_starts_lengths_and_stopping(setup):
    problem, x, policies = setup
    oracle = TabularOracle(problem, x, 0, policies[0])
    r = oracle.rollout(np.random.default_rng(0), 3, 50, start_states=[94, -1, 7],
                       start_actions=[2, -1, 0], lengths=[10, 50, 50], auto_reset=False)
    assert r.obs[0, 0] == 94 and r.actions[0, 0] == 2 and r.obs[1, 0] == 31
    assert r.mask[0].sum() == 10  # (11, 1) is more than 10 moves from G1
    # Chain 2 starts on the active goal: one step (reward 1), then it stops.
    assert r.mask[2].sum() == 1 and r.terminated[2, 0] and r.rewards[2, 0] == 1.0


def test_time_limit_truncates_and_resets(setup):
    problem, x, policies = setup
    oracle = TabularOracle(problem, x, 0, TabularPolicy(np.full((104, 4), 0.25)))
    r = oracle.rollout(np.random.default_rng(0), 2, 1000)
    assert r.episode_step.max() == 199
    assert np.all(r.episode_step[r.truncated] == 199)
    after = np.roll(r.ends, 1, axis=1)
    after[:, 0] = True
    np.testing.assert_array_equal(r.episode_step == 0, after)
    r = oracle.rollout(np.random.default_rng(0), 2, 1000, time_limit=False)
    assert not r.truncated.any()


def test_bad_rollout_arguments(setup):
    problem, x, policies = setup
    oracle = TabularOracle(problem, x, 0, policies[0])
    with pytest.raises(ValueError, match=r"start_states must be integer indices in 0..103"):
        oracle.rollout(np.random.default_rng(0), 2, 5, start_states=[0, 104])
    with pytest.raises(ValueError, match=r"start_actions must have shape \(2,\)"):
        oracle.rollout(np.random.default_rng(0), 2, 5, start_actions=[0])
    for args, message in (((0, 5), r"^n_envs must be an integer >= 1; got 0$"),
                          ((2, -1), r"^n_steps must be an integer >= 0; got -1$")):
        with pytest.raises(ValueError, match=message):
            oracle.rollout(np.random.default_rng(0), *args)
    with pytest.raises(ValueError, match=r"^lengths must be integer indices in 0..5; got range"):
        oracle.rollout(np.random.default_rng(0), 2, 5, lengths=[5, 6])
    with pytest.raises(ValueError, match=r"^lengths must have shape \(2,\); got \(3,\)$"):
        oracle.rollout(np.random.default_rng(0), 2, 5, lengths=[1, 2, 3])
    with pytest.raises(ValueError, match="backend"):
        make_oracle(problem, x, 0, policies[0], backend="jax")


@pytest.mark.parametrize("context", [0, 1])
def test_gym_and_tabular_paths_sample_the_same_process(setup, context):
    """Mean episode return and length agree within 4 standard errors of their difference."""
    problem, x, policies = setup
    rng = np.random.default_rng(context)
    fast = TabularOracle(problem, x, context, policies[context]).rollout(rng, 20, 2000)
    slow = GymOracle(problem, x, context, policies[context]).rollout(rng, 4, 2000)
    for leader in (True, False):
        a = fast.episode_returns(0.99, leader=leader)
        b = slow.episode_returns(0.99, leader=leader)
        se = np.sqrt(a.var() / a.size + b.var() / b.size)
        assert abs(a.mean() - b.mean()) < 4 * se
    visits_fast = np.bincount(fast.obs[fast.mask], minlength=104) / fast.n_transitions
    visits_slow = np.bincount(slow.obs[slow.mask], minlength=104) / slow.n_transitions
    assert np.abs(visits_fast - visits_slow).max() < 0.02


def test_discounted_scans_are_adjoint():
    rng = np.random.default_rng(0)
    g = rng.normal(size=(3, 40))
    w = rng.normal(size=(3, 40))
    ends = rng.random((3, 40)) < 0.1
    G = discounted_returns(g, ends, 0.9)
    W = discounted_accumulation(w, ends, 0.9)
    assert np.sum(w * G) == pytest.approx(np.sum(W * g))
    # Direct definition of the return of step 0 of chain 0.
    end = np.flatnonzero(ends[0])
    stop = end[0] + 1 if end.size else 40
    assert G[0, 0] == pytest.approx(np.sum(g[0, :stop] * 0.9 ** np.arange(stop)))


def test_episode_returns_keeps_finished_episodes():
    # Chain 0: episodes [0,1], [2]; unfinished [3]. Chain 1: nothing finished.
    shape = (2, 4)
    leader = np.array([[1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.0, 1.0]])
    ends = np.zeros(shape, bool)
    ends[0, 1] = ends[0, 2] = True
    step = np.array([[0, 1, 0, 0], [0, 1, 2, 3]])
    z = np.zeros(shape)
    r = Rollouts(obs=z.astype(int), actions=z.astype(int), next_obs=z.astype(int), rewards=z,
                 leader_rewards=leader, terminated=ends, truncated=np.zeros(shape, bool),
                 context=z.astype(int), action_probs=z, entropy=z, episode_step=step,
                 mask=np.ones(shape, bool))
    returns = sorted(r.episode_returns(0.5))
    assert returns == pytest.approx(sorted([1 + 0.5 * 2, 3.0, 1 + 0.5 + 0.25 + 0.125]))


def _one_step_counts(oracle, n_per_pair, seed):
    """``(S·A, S + 1)`` counts of next states (last column: the episode ended) of ``n_per_pair``
    one-step rollouts from every ``(s, a)`` (restarts, paper Alg. 2)."""
    S, A = oracle.pi.shape
    pairs = np.repeat(np.arange(S * A), n_per_pair)
    r = oracle.rollout(np.random.default_rng(seed), pairs.size, 1, start_states=pairs // A,
                       start_actions=pairs % A, auto_reset=False, time_limit=False)
    outcome = np.where(r.terminated[:, 0], S, r.next_obs[:, 0])
    counts = np.zeros((S * A, S + 1), dtype=np.int64)
    np.add.at(counts, (pairs, outcome), 1)
    assert (r.obs[:, 0] == pairs // A).all() and (r.actions[:, 0] == pairs % A).all()
    return counts


def _with_termination(P):
    """``(S·A, S + 1)``: ``P(s'|s, a)`` and, last, the probability that the episode ends."""
    flat = P.reshape(-1, P.shape[-1])
    return np.column_stack([flat, 1.0 - flat.sum(-1)])


def test_tabular_sampler_matches_the_model_and_catches_a_two_percent_slip_error(setup):
    """832,000 one-step restarts of the numba sampler, 2,000 from each (s, a) of Four-Rooms:
    next states and terminations match P (chi-square summed over the pairs, p > 0.001); the
    pooled slip chi-square matches too and rejects slip probabilities 1/3 off by ±2 %
    (p < 0.001; reached: z = 11.3 and 13.8, p = 2e-29 and 2e-43)."""
    from bilevel_envs.testing import chi_square_p, pooled_mode_chi_square_p

    problem, x, policies = setup
    oracle = TabularOracle(problem, x, 0, policies[0])
    counts = _one_step_counts(oracle, 2000, seed=0)
    assert chi_square_p(counts, _with_termination(problem.tabular(x, 0).P)) > 0.001

    def slip_p(slip_scale):
        wrong = FourRoomsShaping(move_prob=1 - slip_scale / 3).tabular(x, 0)
        return pooled_mode_chi_square_p(counts, _with_termination(wrong.P))

    assert slip_p(1.0) > 0.001
    assert slip_p(0.98) < 0.001 and slip_p(1.02) < 0.001


# ---------------------------------------------------------------------------- gym vs tabular path
@pytest.fixture(scope="module")
def deterministic():
    """Four-Rooms without slips and two one-hot policies: the soft-optimal route to the goal
    (episodes end at the goal) and "always up" (episodes end at the time limit). Every oracle
    must then produce the same trajectories, whatever its random numbers."""
    problem = FourRoomsShaping(lam=0.003, beta=1.0, move_prob=1.0)
    x = np.random.default_rng(0).normal(0, 0.5, size=105)
    _, sol, _ = ExactSolver(problem).solve(x)
    to_goal = np.eye(4)[sol.pi[0].argmax(-1)]
    always_up = np.tile(np.eye(4)[0], (104, 1))
    return problem, x, {"to_goal": to_goal, "always_up": always_up}


ROLLOUT_CASES = {
    "stream": ({"n_envs": 2, "n_steps": 450}, "to_goal"),
    "time_limit": ({"n_envs": 2, "n_steps": 450}, "always_up"),
    "no_time_limit": ({"n_envs": 1, "n_steps": 250, "time_limit": False}, "always_up"),
    "restarts": ({"n_envs": 4, "n_steps": 30, "start_states": [94, 31, 103, 40],
                  "start_actions": [2, -1, 0, 1], "lengths": [10, 30, 30, 4],
                  "auto_reset": False, "time_limit": False}, "to_goal"),
    "one_chain": ({"n_envs": 1, "n_steps": 12, "start_states": [60], "start_actions": [3],
                   "auto_reset": False}, "always_up"),
}


@pytest.mark.parametrize("case", sorted(ROLLOUT_CASES))
def test_gym_path_returns_the_tabular_paths_trajectories(deterministic, case):
    """Every field of the rollouts (padding included) of the generic Gymnasium path equals the
    compiled tabular path's on a deterministic MDP and policy: starts, forced first actions,
    individual lengths, stopping or auto-reset at episode ends, truncation, probabilities."""
    problem, x, policies = deterministic
    kwargs, name = ROLLOUT_CASES[case]
    kwargs = dict(kwargs)
    n_envs, n_steps = kwargs.pop("n_envs"), kwargs.pop("n_steps")
    policy = TabularPolicy(policies[name])
    fast = TabularOracle(problem, x, 1, policy).rollout(np.random.default_rng(0), n_envs,
                                                        n_steps, **kwargs)
    slow = GymOracle(problem, x, 1, policy).rollout(np.random.default_rng(1), n_envs, n_steps,
                                                    **kwargs)
    for field, value in fast.to_dict().items():
        other = getattr(slow, field)
        assert other.shape == value.shape and other.dtype == value.dtype, field
        np.testing.assert_allclose(other, value, rtol=1e-12, err_msg=field)
    assert fast.terminated.any() or fast.truncated.any() or case in ("no_time_limit",
                                                                     "one_chain")


def test_gym_path_is_reproducible_and_checks_start_states(setup):
    problem, x, policies = setup
    oracle = GymOracle(problem, x, 0, policies[0])
    a = oracle.rollout(np.random.default_rng(3), 2, 60)
    b = oracle.rollout(np.random.default_rng(3), 2, 60)
    for key, value in a.to_dict().items():
        np.testing.assert_array_equal(value, getattr(b, key))
    assert not np.array_equal(a.obs, oracle.rollout(np.random.default_rng(4), 2, 60).obs)
    with pytest.raises(ValueError, match=r"^start_states must hold 2 states; got 3$"):
        oracle.rollout(np.random.default_rng(0), 2, 5, start_states=[1, 2, 3])


def _rollouts(leader, ends, step, mask=None, rewards=None):
    z = np.zeros(leader.shape)
    i = z.astype(int)
    return Rollouts(obs=i, actions=i, next_obs=i, rewards=z if rewards is None else rewards,
                    leader_rewards=leader, terminated=ends, truncated=np.zeros(leader.shape, bool),
                    context=i, action_probs=z, entropy=z, episode_step=step,
                    mask=np.ones(leader.shape, bool) if mask is None else mask)


def test_episode_returns_of_chains_ending_at_different_times_and_padded():
    """Chain 0: episodes [0], [1, 2], unfinished [3]; chain 1: [0, 1, 2, 3], then padding;
    chain 2: unfinished, padded (its cut episode counts, padding adds nothing)."""
    leader = np.array([[1.0, 2.0, 3.0, 9.0, 9.0], [1.0, 1.0, 1.0, 1.0, 0.0],
                       [2.0, 2.0, 0.0, 0.0, 0.0]])
    ends = np.zeros(leader.shape, bool)
    ends[0, [0, 2]] = True
    ends[1, 3] = True
    step = np.array([[0, 0, 1, 0, 1], [0, 1, 2, 3, 0], [0, 1, 0, 0, 0]])
    mask = np.ones(leader.shape, bool)
    mask[1, 4] = mask[2, 2:] = False
    r = _rollouts(leader, ends, step, mask)
    expected = [1.0, 2 + 0.5 * 3, 1 + 0.5 + 0.25 + 0.125, 2 + 0.5 * 2]
    assert sorted(r.episode_returns(0.5)) == pytest.approx(sorted(expected))
    rewards = -leader
    r = _rollouts(leader, ends, step, mask, rewards=rewards)
    assert sorted(r.episode_returns(0.5, leader=False)) == pytest.approx(
        sorted(-np.array(expected)))


def test_rollouts_to_dict_copies_unless_asked_not_to():
    leader = np.ones((1, 3))
    r = _rollouts(leader, np.zeros((1, 3), bool), np.arange(3)[None])
    assert not np.shares_memory(r.to_dict()["leader_rewards"], r.leader_rewards)
    shared = r.to_dict(copy=False)
    assert all(np.shares_memory(v, getattr(r, k)) for k, v in shared.items())
    back = Rollouts.from_dict(shared)
    for key, value in shared.items():
        np.testing.assert_array_equal(getattr(back, key), value)


def test_make_oracle_prefers_the_problems_own_sampler():
    """``"auto"`` and ``"native"`` return the problem's sampler, made with ``x``, the context, the
    policy and the keyword arguments; without one, ``"native"`` says so and ``"auto"`` takes the
    tabular path."""
    from bilevel_envs.envs.garnet import GarnetProblem

    class NativeGarnet(GarnetProblem):
        def make_oracle(self, x, context, policy, **kwargs):
            return ("native", x, context, policy, kwargs)

    policy = TabularPolicy(np.full((6, 3), 1 / 3))
    x = np.zeros(4)
    for backend in ("auto", "native"):
        made = make_oracle(NativeGarnet(), x, 1, policy, backend=backend, speed=2)
        assert made[0] == "native" and made[1] is x
        assert made[2:] == (1, policy, {"speed": 2})
    assert isinstance(make_oracle(NativeGarnet(), x, 1, policy, backend="tabular"),
                      TabularOracle)
    assert isinstance(make_oracle(GarnetProblem(), x, 1, policy), TabularOracle)
    assert isinstance(make_oracle(GarnetProblem(), x, 1, policy, backend="gym"), GymOracle)
    with pytest.raises(ValueError, match=r"^GarnetProblem has no native oracle "
                       r"\(BilevelProblem.make_oracle returned None\); use backend='auto', "
                       r"'tabular' or 'gym'$"):
        make_oracle(GarnetProblem(), x, 1, policy, backend="native")


def test_gym_path_gives_each_env_its_own_randomness():
    """300 restarts from one state under a deterministic policy: the paths differ only through
    the envs' own random streams (6^15 possible paths), so they must be (almost) all distinct;
    env seeds drawn from a small range would repeat whole paths."""
    from bilevel_envs.envs.garnet import GarnetProblem

    problem = GarnetProblem(n_states=6, n_actions=3, p_end=0.0, seed=3)
    policy = TabularPolicy(np.eye(3)[np.arange(6) % 3])
    x = np.zeros(4)
    r = GymOracle(problem, x, 0, policy).rollout(np.random.default_rng(0), 300, 15,
                                                 start_states=[0] * 300, time_limit=False)
    assert len({tuple(path) for path in r.next_obs}) >= 295
