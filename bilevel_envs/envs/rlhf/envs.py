"""RLHF as bilevel RL as Gymnasium envs: the follower's gridworld (``bilevel/PreferenceGrid-v0``)
and the reward modeller's env (``bilevel/RLHF-v0``)."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from bilevel_envs.env_base import BilevelEnvBase
from bilevel_envs.envs.rlhf.problem import PROBLEM_KWARGS, RLHFProblem
from bilevel_envs.leader_env import LeaderEnv
from bilevel_envs.validation import check_int, check_options


class PreferenceGridEnv(BilevelEnvBase):
    """## Description
    The follower's side of RLHF as bilevel RL (paper App. B): a gridworld, rewarded by the
    leader's reward model ``r_x``, over a finite horizon ``H``; its trajectories are what the
    annotators compare. Instances (``instance=``): ``"grid"`` (default; 4×4, below),
    ``"four_rooms"`` (the Four-Rooms layout with a goal at (1, 5) and lava at (3, 3), slippery
    moves) and ``"tiny"`` (a 3-cell chain ``aSG``, exact enumeration of trajectory pairs).

    ```
    S...      S start   G goal (true reward +1)
    .L.L      L lava (−1)
    ....      moving costs 0.05 (first annotator)
    L..G
    ```

    ## Leader parameter x
    ``x ∈ [−10, 10]^d``: ``r_x(s, a) = φ(s, a)·x``; ``reward_model="state_action"`` (``d = S·A``,
    entry ``s·A + a``), ``"state"`` (``d = S``) or ``"features"``. Default (``x=None``): the reward
    model closest to the first annotator's true reward (``problem.true_reward_x(0)``; exact for
    ``"state_action"``): the follower learns to reach the goal and avoid lava. ``x=np.zeros(d)``
    is the zero reward (every policy is optimal; the leader's start in ``bilevel/RLHF-v0``).

    ## Contexts
    ``context``: an annotator (``annotators="one"``: one; ``"two"``: two). It only sets the true
    reward reported in ``info["leader_reward"]``; the follower's MDP is the same for all annotators.

    ## Action Space
    ``Discrete(A)``: grid ``0`` stay, ``1`` up, ``2`` right, ``3`` down, ``4`` left (a move succeeds
    with ``move_prob = 0.9``, else the agent stays); Four-Rooms ``0`` up, ``1`` right, ``2`` down,
    ``3`` left (slip to the other directions, ``move_prob = 2/3``); tiny ``0`` left, ``1`` stay,
    ``2`` right (``move_prob = 0.8``).

    ## Observation Space
    ``Discrete(H·S)``: ``t·S + s`` with ``t`` the time step and ``s`` the cell (row-major free
    cells).

    ## Starting State
    Cell ``S`` at ``t = 0``, or ``options={"state": t·S + s}`` in ``reset``.

    ## Rewards
    Follower ``r = r_x(s, a) = φ(s, a)·x``; ``info["leader_reward"]`` is the annotator's true reward
    ``r_ξ(s, a)``. The leader's objective is trajectory-level (Bradley–Terry log-likelihood of the
    annotator's labels), see :class:`RLHFEnv`.

    ## Episode End
    Terminates after ``H`` steps (the last step keeps the observation). The registered id has no
    ``max_episode_steps`` (a deliberate choice: every episode ends by itself after ``H`` steps, and
    ``H = trajectory_length`` is an argument, so a fixed time limit could only cut episodes
    short).

    ## Information
    ``"leader_reward"`` (float), ``"context"`` (int), ``"t"`` (int, time of the new observation),
    ``"cell"`` ((row, col) of the new observation).

    ## Arguments
    ```python
    gym.make("bilevel/PreferenceGrid-v0", x=None, context=0, instance="grid",
             trajectory_length=None,
             reward_model="state_action", annotators="one", move_prob=None, render_mode=None)
    ```
    Any :class:`RLHFProblem` argument is accepted. ``render_mode="ansi"`` gives a text view (other
    modes raise ``TypeError``).

    ## References
    Thoma et al., "Contextual Bilevel Reinforcement Learning for Incentive Alignment", NeurIPS
    2024, App. B; Christiano et al., "Deep RL from Human Preferences", NeurIPS 2017; Lee et al.,
    "B-Pref: Benchmarking Preference-Based RL", 2021 (teacher rationality and mistakes).

    ## Version History
    * v0: initial release.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(self, x: np.ndarray | None = None, context: Any = 0,
                 render_mode: str | None = None, problem: RLHFProblem | None = None,
                 **problem_kwargs: Any):
        if problem is not None and problem_kwargs:
            raise ValueError("pass either problem or RLHFProblem arguments, not both")
        self.render_mode = self._check_render_mode(render_mode)
        self.problem = RLHFProblem(**problem_kwargs) if problem is None else problem
        p = self.problem
        self.x = p.check_x(p.true_reward_x(0) if x is None else x)
        self.context = p.context_index(context)
        self._reward = p.reward(self.x)
        self._true_reward = p.annotators[self.context].reward
        self._cdf = np.cumsum(p.P, axis=-1)
        self._cdf /= self._cdf[..., -1:]
        self._mu_cdf = np.cumsum(p.mu)
        self.observation_space = spaces.Discrete(p.trajectory_length * p.n_states)
        self.action_space = spaces.Discrete(p.n_actions)
        self.t, self.s = 0, 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        options = check_options(options, ("state",))
        super().reset(seed=seed)
        S, n = self.problem.n_states, self.observation_space.n
        if "state" in options:
            state = check_int("options['state'] (an index t·S + s)", options["state"], 0, n - 1)
            self.t, self.s = divmod(state, S)
        else:
            self.t = 0
            self.s = int(np.searchsorted(self._mu_cdf, self.np_random.random(), side="right"))
        return self._obs(), self._info()

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"action must be an integer in 0..{self.action_space.n - 1}; "
                             f"got {action!r}")
        s, a = self.s, int(action)
        reward, leader_reward = float(self._reward[s, a]), float(self._true_reward[s, a])
        terminated = self.t == self.problem.trajectory_length - 1
        if not terminated:
            self.s = int(np.searchsorted(self._cdf[s, a], self.np_random.random(), side="right"))
            self.t += 1
        return self._obs(), reward, terminated, False, self._info(leader_reward)

    def _obs(self) -> int:
        return self.t * self.problem.n_states + self.s

    def _info(self, leader_reward: float | None = None) -> dict:
        info = {"context": self.context, "t": self.t, "cell": self.problem.cells[self.s]}
        if leader_reward is not None:
            info["leader_reward"] = leader_reward
        return info

    def render(self):
        if self.render_mode != "ansi":
            self._warn_no_render_mode()
            return None
        grid = [list(row) for row in self.problem.layout]
        r, c = self.problem.cells[self.s]
        grid[r][c] = "A"
        return "\n".join("".join(row) for row in grid) + f"\nt = {self.t}\n"


class RLHFEnv(LeaderEnv):
    """## Description
    The leader's side of RLHF as bilevel RL (paper App. B): each step sets a reward model ``x``,
    lets the follower respond with its soft-optimal policy ``π*_x`` (by default exactly), samples
    ``n_pairs`` fresh trajectory pairs from it per follower, and returns the annotators'
    Bradley–Terry log-likelihood.

    ## Leader parameter x (Action Space)
    ``Box(−x_max, x_max, (d,), float64)`` (``x_max = 10``): reward-model parameters,
    ``r_x(s, a) = φ(s, a)·x`` (see :class:`RLHFProblem`). Out-of-box values raise ``ValueError``.

    ## Contexts
    Annotators (Bradley–Terry teachers with a true reward, rationality β and mistake probability
    ε); ``annotators="two"`` for two. ``contexts="sample"`` draws ``n_followers`` per step,
    ``"all"`` serves every annotator.

    ## Observation Space
    The last ``x`` applied (zeros after ``reset``), same box as the action space.

    ## Rewards
    ``Σ_ξ w_ξ mean_pairs ℓ_ξ(τ0, τ1; x)`` with ``ℓ_ξ = (1 − q_ξ) log σ(−Δ_x) + q_ξ log σ(Δ_x)``: an
    unbiased estimate of
    ``J(x) = E_ξ E_{τ0,τ1 ~ π*_x} E_l[(1 − l) log P_x(τ0 ≻ τ1) + l log P_x(τ1 ≻ τ0)]`` (the label
    is averaged out with the teacher's probability ``q_ξ``). Exact ``J`` and ``∇J`` for the tiny
    instance: ``bilevel_envs.tabular.exact_objective(env.unwrapped.problem, x)``.
    Leaders: ``HPGD`` estimates ``∇J`` from the rollouts' pairs with the trajectory-level
    score-function form (``leaders.estimators.trajectory_estimate``; the problem supplies
    ``pair_objective``, ``grad_pair_objective``, ``trajectory_pairs``);
    ``ZeroOrder`` uses the reward; AMD does not apply (``J`` is not a sum of leader rewards).

    ## Episode End
    Never terminates; the registered id truncates after 1000 leader steps
    (``max_episode_steps``; ``gym.make(..., max_episode_steps=N)`` changes it).

    ## Rendering
    ``render_mode="ansi"``: the step, a summary of the last reward model, the ``J`` estimate and
    the annotators served.

    ## Information
    ``"rollouts"`` (dict of ``(2·n_pairs·n_followers, H)`` arrays, one trajectory per chain; chains
    ``2k`` and ``2k + 1`` form pair ``k``), ``"labels"`` (``(n_followers, n_pairs)`` teacher
    labels, 1 when the second trajectory is preferred), ``"log_likelihood"`` (mean BT
    log-likelihood of those labels), ``"preference_accuracy"`` (how often ``r_x`` prefers the
    trajectory the label prefers; ties of ``r_x`` count ½), ``"true_regret"`` (exact
    :meth:`RLHFProblem.true_regret` of the follower's actual policy), each context-weighted, plus
    ``"contexts"``, ``"context_weights"``, ``"objective_estimate"``, ``"follower_stats"``.

    ## Arguments
    ```python
    gym.make("bilevel/RLHF-v0", instance="grid", lam=0.1, n_pairs=128,
             trajectory_length=None, reward_model="state_action", annotators="one", beta=1.0,
             epsilon=0.0, normalise=False, follower="soft_vi", contexts="sample",
             n_followers=1, render_mode=None)
    ```
    ``trajectory_length`` is ``H``, the length of the follower's episodes.
    ``objective="exact"`` is not available (the objective is not decomposable).

    ## References
    Thoma et al., "Contextual Bilevel Reinforcement Learning for Incentive Alignment", NeurIPS
    2024, App. B; Christiano et al., "Deep RL from Human Preferences", NeurIPS 2017.

    ## Version History
    * v0: initial release.
    """

    def __init__(self, instance: str = "grid", lam: float = 0.1, n_pairs: int = 128,
                 **kwargs: Any):
        self._check_render_mode(kwargs.get("render_mode"))
        for name in ("n_envs", "n_rollout_steps"):
            if name in kwargs:
                raise ValueError(f"{name} is set by n_pairs (each pair is two chains of H steps)")
        check_int("n_pairs", n_pairs, 1)
        problem_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in PROBLEM_KWARGS}
        problem = RLHFProblem(instance=instance, lam=lam, **problem_kwargs)
        self.n_pairs = int(n_pairs)
        super().__init__(problem, n_envs=2 * self.n_pairs,
                         n_rollout_steps=problem.trajectory_length, **kwargs)

    def step(self, action):
        x, reward, terminated, truncated, info = super().step(action)
        problem = self.problem
        metrics = {"log_likelihood": [], "preference_accuracy": [], "true_regret": []}
        labels = []
        states = np.arange(problem.follower_observation_space.n)
        for follower in self.last_step.followers:
            context, pairs = follower.context, follower.pairs
            label = problem.sample_labels(context, pairs.traj0, pairs.traj1, self.np_random)
            labels.append(label)
            metrics["log_likelihood"].append(
                problem.log_likelihood(x, pairs.traj0, pairs.traj1, label).mean())
            metrics["preference_accuracy"].append(
                problem.preference_accuracy(x, context, pairs.traj0, pairs.traj1, label))
            metrics["true_regret"].append(
                problem.true_regret(x, context, follower.response.policy.action_probs(states)))
        weights = self.last_step.weights
        info.update({k: float(weights @ np.asarray(v)) for k, v in metrics.items()})
        info["labels"] = np.stack(labels)
        return x, reward, terminated, truncated, info
