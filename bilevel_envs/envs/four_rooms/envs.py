"""Four-Rooms reward shaping as Gymnasium envs: the follower's gridworld (``bilevel/FourRooms-v0``)
and the leader's env (``bilevel/FourRoomsShaping-v0``)."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from bilevel_envs.env_base import BilevelEnvBase
from bilevel_envs.envs.four_rooms.model import (
    CELLS,
    DEFAULT_MOVE_PROB,
    GOAL_STATES,
    N_ACTIONS,
    N_CELLS,
    N_PARAMS,
    NEIGHBOURS,
    START_STATE,
    direction_probs,
    follower_state_reward,
    leader_state_reward,
    most_likely_path,
    penalties,
    render_penalty_map,
    render_rgb,
    render_text,
    softmax,
)
from bilevel_envs.envs.four_rooms.problem import FourRoomsShaping
from bilevel_envs.leader_env import LeaderEnv
from bilevel_envs.validation import check_int, check_options


class FourRoomsEnv(BilevelEnvBase):
    """## Description
    The follower's side of Four-Rooms reward shaping (paper §5.1): a 13×13 gridworld with four
    rooms (104 free cells), a start cell (4, 1), the context's goal and the leader's target
    (8, 4). The leader's parameter ``x`` sets a penalty on every cell.

    ```
    #############
    #.....#..G1.#      S  start (4, 1)
    #.....#.....#      G1 goal of context 0: (1, 9)
    #...........#      G2 goal of context 1: (11, 11)
    #S....#.....#      +  leader's target (8, 4)
    #.....#.....#
    ##.####.....#
    #.....###.###
    #...+.#.....#
    #.....#.....#
    #...........#
    #.....#....G2
    #############
    ```

    ## Leader parameter x
    ``x ∈ [−30, 30]^105`` (softmax logits, one per free cell in row-major order plus an unused
    slot).
    Penalty of cell ``c``: ``r̃(c) = −0.2 · softmax(x)[c]``, so the total penalty is at most 0.2.

    ## Contexts
    ``context ∈ {0, 1}``: the goal ``G1 = (1, 9)`` or ``G2 = (11, 11)`` (the other goal is an
    ordinary cell).

    ## Action Space
    ``Discrete(4)``: 0 up, 1 right, 2 down, 3 left. The chosen move happens with probability
    ``move_prob``; each other direction with ``(1 − move_prob)/3``. Moves into walls stay in place.

    ## Observation Space
    ``Discrete(104)``: the index of the agent's cell in row-major order of free cells.

    ## Starting State
    Cell (4, 1) (state 31), or ``options={"state": s}`` in ``reset`` to start in cell index ``s``.

    ## Rewards
    On the pre-step cell ``s``: follower ``r = 1{s = G} + r̃(s) 1{s ≠ G}``; leader (in ``info``)
    ``r̄ = 1{s = (8,4)} − β 1{s = G} Σ_c |r̃(c)|``.

    ## Episode End
    Terminates on the step taken *from* the goal (the agent stays there). Truncated after 200 steps
    by the registered ``TimeLimit``.

    ## Information
    ``info``: ``"leader_reward"`` (float), ``"context"`` (int), ``"cell"`` ((row, col) after the
    step).

    ## Arguments
    ```python
    gym.make("bilevel/FourRooms-v0", x=np.zeros(105), context=0, move_prob=2/3, beta=1.0)
    ```
    ``render_mode``: ``"ansi"`` (text grid) or ``"rgb_array"``. ``problem=`` (a
    :class:`~bilevel_envs.envs.four_rooms.problem.FourRoomsShaping`) replaces ``move_prob`` and
    ``beta``; :meth:`FourRoomsShaping.follower_env` passes itself this way. ``env.set_x(x)``
    applies new penalties in place (followers that keep their training env across leader steps).

    ## References
    Thoma et al., "Contextual Bilevel Reinforcement Learning for Incentive Alignment", NeurIPS 2024.

    ## Version History
    * v0: initial release (reward timing and goal handling as in the authors' code).
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}

    def __init__(self, x: np.ndarray | None = None, context: Any = 0,
                 move_prob: float | None = None, beta: float | None = None,
                 render_mode: str | None = None, problem: FourRoomsShaping | None = None):
        if problem is None:
            problem = FourRoomsShaping(lam=1.0, beta=1.0 if beta is None else beta,
                                       move_prob=DEFAULT_MOVE_PROB if move_prob is None
                                       else move_prob)
        elif move_prob is not None or beta is not None:
            raise ValueError("pass either problem= or move_prob/beta, not both")
        self.problem = problem
        move_prob = problem.move_prob
        self.context = self.problem.context_index(context)
        self.render_mode = self._check_render_mode(render_mode)
        self.goal = GOAL_STATES[self.context]
        self.set_x(np.zeros(N_PARAMS) if x is None else x)
        self._direction_cdf = np.cumsum(direction_probs(move_prob), axis=1)
        self.observation_space = spaces.Discrete(N_CELLS)
        self.action_space = spaces.Discrete(N_ACTIONS)
        self.s = START_STATE

    def set_x(self, x: np.ndarray) -> None:
        """Apply the leader's penalties ``x`` in place (new rewards from the next step on)."""
        self.x = self.problem.check_x(x)
        sigma = softmax(self.x)
        self._reward = follower_state_reward(sigma, self.goal)
        self._leader_reward = leader_state_reward(sigma, self.goal, self.problem.beta)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        options = check_options(options, ("state",))
        super().reset(seed=seed)
        self.s = START_STATE
        if "state" in options:
            self.s = check_int("options['state']", options["state"], 0, N_CELLS - 1)
        return self.s, {"context": self.context, "cell": CELLS[self.s]}

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"action must be an integer in 0..{N_ACTIONS - 1}; got {action!r}")
        s = self.s
        reward, leader_reward = float(self._reward[s]), float(self._leader_reward[s])
        terminated = s == self.goal
        if not terminated:
            cdf = self._direction_cdf[int(action)]
            direction = min(int(np.searchsorted(cdf, self.np_random.random(), side="right")), 3)
            self.s = int(NEIGHBOURS[s, direction])
        info = {"leader_reward": leader_reward, "context": self.context, "cell": CELLS[self.s]}
        return self.s, reward, terminated, False, info

    def render(self):
        if self.render_mode == "ansi":
            return render_text(self.s, self.goal)
        if self.render_mode == "rgb_array":
            return render_rgb(self.s, self.goal, penalties(softmax(self.x)))
        self._warn_no_render_mode()
        return None


class FourRoomsShapingEnv(LeaderEnv):
    """## Description
    The leader's side of Four-Rooms reward shaping (paper §5.1, Table 3): each step applies a
    penalty parameter ``x`` to the followers' gridworld (:class:`FourRoomsEnv`), lets every follower
    respond (by default exact soft value iteration) and returns the leader's objective.

    ## Leader parameter x (Action Space)
    ``Box(−30, 30, (105,), float64)``: softmax logits; ``r̃ = −0.2 softmax(x)[:104]`` per cell, the
    105th entry is unused budget. Values outside the box raise ``ValueError``.

    ## Contexts
    Goals ``G1 = (1, 9)`` and ``G2 = (11, 11)``, uniform. ``contexts="sample"`` (default) draws
    ``n_followers`` goals per step; ``"all"`` serves one follower per goal every step.

    ## Observation Space
    The last ``x`` applied (zeros after ``reset``), same box as the action space.

    ## Rewards
    An estimate of ``J(x) = E_ξ E_π*[Σ_t 0.99^t r̄(s_t)]`` with
    ``r̄(s) = 1{s = (8,4)} − β 1{s = G_ξ} Σ_c |r̃(c)|``: the Monte-Carlo mean discounted return of the
    episodes in the rollouts (``objective="monte_carlo"``), or the exact value of the followers'
    policies (``objective="exact"``).

    ## Episode End
    Never terminates; the registered id truncates after 1000 leader steps
    (``max_episode_steps``; ``gym.make(..., max_episode_steps=N)`` changes it).

    ## Rendering
    ``render_mode="ansi"``: the step, a summary of the last ``x``, the ``J`` estimate and the goals
    served. ``render_mode="rgb_array"``: a picture of the last ``x``'s penalties (white: none, dark
    red: −0.2, log scale) with the most likely path of each follower of the last step (argmax
    action, intended move; solid black to G1, dashed violet to G2) and markers for the start
    (gold), the goals (green) and the leader's "+1" target (blue), as in the docs' penalty maps.

    ## Information
    ``"rollouts"`` (dict of ``(n_envs, T)`` arrays: ``obs``, ``actions``, ``next_obs``, ``rewards``,
    ``leader_rewards``, ``terminated``, ``truncated``, ``context``, ``action_probs``, ``entropy``,
    ``episode_step``, ``mask``), ``"contexts"``, ``"objective_estimate"``, ``"follower_stats"``
    (and ``"objective_exact"`` with ``objective="exact"``).

    ## Arguments
    ```python
    gym.make("bilevel/FourRoomsShaping-v0", lam=0.001, beta=1.0, move_prob=2/3,
             follower="soft_vi", follower_kwargs=None, contexts="sample", n_followers=1,
             n_envs=5, n_rollout_steps=2000, objective="monte_carlo", render_mode=None)
    ```

    ## References
    Thoma et al., "Contextual Bilevel Reinforcement Learning for Incentive Alignment", NeurIPS 2024.

    ## Version History
    * v0: initial release.
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}

    def __init__(self, lam: float = 0.001, beta: float = 1.0,
                 move_prob: float = DEFAULT_MOVE_PROB, **kwargs: Any):
        self._check_render_mode(kwargs.get("render_mode"))
        super().__init__(FourRoomsShaping(lam=lam, beta=beta, move_prob=move_prob), **kwargs)

    def render_rgb(self) -> np.ndarray:
        """The penalties of the last ``x`` and the last step's followers' most likely paths
        (uniform penalties and no paths before the first step)."""
        step = self.last_step
        x = np.zeros(N_PARAMS) if step is None else step.x
        paths = {} if step is None else {
            f.context: most_likely_path(f.response.policy.action_probs(np.arange(N_CELLS)),
                                        GOAL_STATES[f.context]) for f in step.followers}
        return render_penalty_map(penalties(softmax(x)), paths)
