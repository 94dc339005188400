"""Four-Rooms reward shaping (paper §5.1, App. F.2): a leader penalises cells to steer followers.

Model logic (map, slip dynamics, penalty parametrisation, rewards and their derivatives) is a
set of pure functions; :class:`FourRoomsShaping` is the :class:`~bilevel_envs.BilevelProblem`,
:class:`FourRoomsEnv` the follower's Gymnasium env and :class:`FourRoomsShapingEnv` the registered
leader env. Facts behind the choices: ``shared/reference`` (README and notes §1).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.wrappers import TimeLimit

from bilevel_envs.leader_env import LeaderEnv
from bilevel_envs.problem import BilevelProblem
from bilevel_envs.tabular import TabularModel

# ---------------------------------------------------------------------------- the map
MAP = (
    "#############",
    "#.....#.....#",
    "#.....#.....#",
    "#...........#",
    "#.....#.....#",
    "#.....#.....#",
    "##.####.....#",
    "#.....###.###",
    "#.....#.....#",
    "#.....#.....#",
    "#...........#",
    "#.....#.....#",
    "#############",
)
UP, RIGHT, DOWN, LEFT = 0, 1, 2, 3
#: (row, col) displacement of each action.
DIRECTIONS = np.array([(-1, 0), (0, 1), (1, 0), (0, -1)])
START = (4, 1)
GOALS = ((1, 9), (11, 11))  # context ξ = 0 ("G1") and ξ = 1 ("G2")
TARGET = (8, 4)  # the leader's "+1" cell
PENALTY_SCALE = 0.2  # r̃ ∈ [−0.2, 0]: total penalty budget
DEFAULT_MOVE_PROB = 2.0 / 3.0
MAX_EPISODE_STEPS = 200
X_BOUND = 30.0  # softmax logits: differences beyond ±60 are below float64 resolution anyway

#: Free cells in row-major order; the state index of a cell is its position in this tuple.
CELLS = tuple((r, c) for r, row in enumerate(MAP) for c, ch in enumerate(row) if ch == ".")
CELL_INDEX = {cell: i for i, cell in enumerate(CELLS)}
N_CELLS = len(CELLS)  # 104
N_PARAMS = N_CELLS + 1  # one logit per cell plus the "unused budget" slot
N_ACTIONS = 4
START_STATE, TARGET_STATE = CELL_INDEX[START], CELL_INDEX[TARGET]
GOAL_STATES = tuple(CELL_INDEX[g] for g in GOALS)


def _neighbour_table() -> np.ndarray:
    """``(S, 4)``: the cell reached by moving in each direction (walls: stay in place)."""
    table = np.empty((N_CELLS, N_ACTIONS), dtype=np.int64)
    for s, (r, c) in enumerate(CELLS):
        for a, (dr, dc) in enumerate(DIRECTIONS):
            table[s, a] = CELL_INDEX.get((r + dr, c + dc), s)
    return table


NEIGHBOURS = _neighbour_table()


# ---------------------------------------------------------------------------- pure model logic
def direction_probs(move_prob: float) -> np.ndarray:
    """``(4, 4)``: probability of moving in direction ``j`` when choosing action ``i``."""
    other = (1.0 - move_prob) / 3.0
    return np.full((N_ACTIONS, N_ACTIONS), other) + (move_prob - other) * np.eye(N_ACTIONS)


@lru_cache(maxsize=16)
def transition_tensor(move_prob: float, goal_state: int) -> np.ndarray:
    """``P[s, a, s']`` with slip ``move_prob``; the active goal's row is zero (terminal)."""
    P = np.zeros((N_CELLS, N_ACTIONS, N_CELLS))
    probs = direction_probs(move_prob)
    for direction in range(N_ACTIONS):
        np.add.at(P, (np.arange(N_CELLS)[:, None], np.arange(N_ACTIONS)[None, :],
                      NEIGHBOURS[:, direction][:, None]), probs[:, direction][None, :])
    P[goal_state] = 0.0
    P.setflags(write=False)
    return P


def softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max())
    return z / z.sum()


def penalties(sigma: np.ndarray) -> np.ndarray:
    """Cell penalties ``r̃ = −0.2 · softmax(x)[:104]`` from ``sigma = softmax(x)``."""
    return -PENALTY_SCALE * sigma[:N_CELLS]


def penalty_jacobian(sigma: np.ndarray) -> np.ndarray:
    """``(104, 105)``: ``∂r̃_c/∂x_j = −0.2 σ_c (δ_cj − σ_j)``."""
    jac = np.outer(sigma[:N_CELLS], sigma)
    jac[np.arange(N_CELLS), np.arange(N_CELLS)] -= sigma[:N_CELLS]
    return PENALTY_SCALE * jac


def total_penalty_grad(sigma: np.ndarray) -> np.ndarray:
    """``∂/∂x Σ_c |r̃_c| = ∂/∂x 0.2 (1 − σ_105) = −0.2 σ_105 (e_105 − σ)``."""
    g = PENALTY_SCALE * sigma[-1] * sigma
    g[-1] -= PENALTY_SCALE * sigma[-1]
    return g


def follower_state_reward(sigma: np.ndarray, goal_state: int) -> np.ndarray:
    """``r(s)``: 1 on the active goal (the step taken from it), the cell penalty elsewhere."""
    r = penalties(sigma).copy()
    r[goal_state] = 1.0
    return r


def leader_state_reward(sigma: np.ndarray, goal_state: int, beta: float) -> np.ndarray:
    """``r̄(s) = 1{s = target} − β 1{s = goal} Σ_c |r̃_c|`` (cost paid once, from the goal)."""
    r = np.zeros(N_CELLS)
    r[TARGET_STATE] += 1.0
    r[goal_state] -= beta * PENALTY_SCALE * (1.0 - sigma[-1])
    return r


class FourRoomsShaping(BilevelProblem):
    """The Four-Rooms reward-shaping problem (paper §5.1) as a :class:`BilevelProblem`.

    * ``x ∈ [−30, 30]^105``: softmax logits, one per free cell (state order) plus an unused-budget
      slot; penalties ``r̃ = −0.2 softmax(x)[:104]`` (total budget 0.2).
    * Contexts: the two goals ``(1, 9)`` and ``(11, 11)``, uniform.
    * Follower reward ``r(s) = 1{s = G_ξ} + r̃(s) 1{s ≠ G_ξ}``, collected on the pre-step state; the
      step taken from the goal ends the episode.
    * Leader reward ``r̄(s) = 1{s = (8,4)} − β 1{s = G_ξ} Σ_c |r̃(c)|``.

    Args:
        lam: follower entropy weight λ.
        beta: leader's weight β on the total penalty it implements.
        move_prob: probability that the chosen move happens; the other three directions share
            the rest (default 2/3; the paper's Table 3 numbers were produced with 0.56).
        gamma: discount of both levels (0.99).
    """

    is_tabular = True

    def __init__(self, lam: float = 0.001, beta: float = 1.0,
                 move_prob: float = DEFAULT_MOVE_PROB, gamma: float = 0.99):
        if not (np.isfinite(lam) and lam > 0):
            raise ValueError(f"lam must be a positive number; got {lam}")
        if not (np.isfinite(beta) and beta >= 0):
            raise ValueError(f"beta must be a non-negative number; got {beta}")
        if not 0.0 <= move_prob <= 1.0:
            raise ValueError(f"move_prob must be in [0, 1]; got {move_prob}")
        if not 0.0 <= gamma < 1.0:
            raise ValueError(f"gamma must be in [0, 1); got {gamma}")
        self.lam, self.beta, self.move_prob = float(lam), float(beta), float(move_prob)
        self.gamma = self.leader_gamma = float(gamma)
        self.x_space = spaces.Box(-X_BOUND, X_BOUND, shape=(N_PARAMS,), dtype=np.float64)
        self.follower_action_space = spaces.Discrete(N_ACTIONS)
        self.follower_observation_space = spaces.Discrete(N_CELLS)
        self.max_episode_steps = MAX_EPISODE_STEPS
        self.context_values = GOALS
        self.context_probs = np.full(len(GOALS), 1.0 / len(GOALS))
        self._mu = np.zeros(N_CELLS)
        self._mu[START_STATE] = 1.0
        self._caches: dict[int, dict] = {i: {} for i in range(len(GOALS))}
        self._last_model: dict[int, tuple[np.ndarray, TabularModel]] = {}

    @property
    def x_init(self) -> np.ndarray:
        return np.zeros(N_PARAMS)

    def sample_x_init(self, rng: np.random.Generator) -> np.ndarray:
        """``N(0, 0.01²)`` logits, as in the authors' code (an almost uniform penalty)."""
        return rng.normal(0.0, 0.01, size=N_PARAMS)

    def context_name(self, context: Any) -> str:
        i = self.context_index(context)
        return f"G{i + 1} {GOALS[i]}"

    # ------------------------------------------------------------------ models and envs
    def tabular(self, x: np.ndarray, context: Any) -> TabularModel:
        ctx = self.context_index(context)
        x = self.check_x(x)
        # A leader step asks for the same (x, ξ) twice (follower solve, sampler): reuse it.
        last = self._last_model.get(ctx)
        if last is not None and np.array_equal(last[0], x):
            return last[1]
        model = self._build_model(x, ctx)
        self._last_model[ctx] = (x, model)
        return model

    def _build_model(self, x: np.ndarray, ctx: int) -> TabularModel:
        goal = GOAL_STATES[ctx]
        sigma = softmax(x)
        dr_state = penalty_jacobian(sigma)
        dr_state[goal] = 0.0
        dr_leader_state = np.zeros((N_CELLS, N_PARAMS))
        dr_leader_state[goal] = -self.beta * total_penalty_grad(sigma)
        shape = (N_CELLS, N_ACTIONS)
        return TabularModel(
            P=transition_tensor(self.move_prob, goal),
            r=np.broadcast_to(follower_state_reward(sigma, goal)[:, None], shape),
            r_leader=np.broadcast_to(leader_state_reward(sigma, goal, self.beta)[:, None], shape),
            mu=self._mu, gamma=self.gamma, leader_gamma=self.leader_gamma,
            dr=np.broadcast_to(dr_state[:, None, :], shape + (N_PARAMS,)),
            dr_leader=np.broadcast_to(dr_leader_state[:, None, :], shape + (N_PARAMS,)),
            cache=self._caches[ctx],
        )

    def follower_env(self, x: np.ndarray, context: Any, **kwargs: Any) -> gym.Env:
        env = FourRoomsEnv(x=self.check_x(x), context=self.context_index(context),
                           move_prob=self.move_prob, beta=self.beta, **kwargs)
        return TimeLimit(env, max_episode_steps=self.max_episode_steps)

    # ------------------------------------------------------------------ per-transition terms
    def follower_reward(self, x, context, obs, actions, next_obs) -> np.ndarray:
        goal = GOAL_STATES[self.context_index(context)]
        return follower_state_reward(softmax(x), goal)[np.asarray(obs)]

    def leader_reward(self, x, context, obs, actions, next_obs) -> np.ndarray:
        goal = GOAL_STATES[self.context_index(context)]
        return leader_state_reward(softmax(x), goal, self.beta)[np.asarray(obs)]

    def grad_follower_reward(self, x, context, obs, actions, next_obs, weights=None):
        goal = GOAL_STATES[self.context_index(context)]
        sigma = softmax(x)
        obs = np.asarray(obs)
        if weights is None:
            jac = penalty_jacobian(sigma)
            jac[goal] = 0.0
            return jac[obs]
        # Σ_n w_n ∂r̃(s_n) = −0.2 (c ⊙ σ − (c·σ) σ) with c the weight per cell (goal excluded).
        c = np.bincount(obs, weights=weights, minlength=N_CELLS)
        c[goal] = 0.0
        out = -PENALTY_SCALE * (c @ sigma[:N_CELLS]) * sigma
        out[:N_CELLS] += PENALTY_SCALE * c * sigma[:N_CELLS]
        return -out

    def grad_leader_reward(self, x, context, obs, actions, next_obs, weights=None):
        goal = GOAL_STATES[self.context_index(context)]
        obs = np.asarray(obs)
        g = -self.beta * total_penalty_grad(softmax(x))
        if weights is None:
            return np.where((obs == goal)[:, None], g[None, :], 0.0)
        return float(np.sum(np.asarray(weights)[obs == goal])) * g

    def __repr__(self) -> str:
        return (f"FourRoomsShaping(lam={self.lam}, beta={self.beta}, "
                f"move_prob={self.move_prob:.4g})")


class FourRoomsEnv(gym.Env):
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
    ``x ∈ [−30, 30]^105`` (softmax logits, one per free cell in row-major order plus an unused slot).
    Penalty of cell ``c``: ``r̃(c) = −0.2 · softmax(x)[c]``, so the total penalty is at most 0.2.

    ## Contexts
    ``context ∈ {0, 1}``: the goal ``G1 = (1, 9)`` or ``G2 = (11, 11)`` (the other goal is an ordinary
    cell).

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
    ``info``: ``"leader_reward"`` (float), ``"context"`` (int), ``"cell"`` ((row, col) after the step).

    ## Arguments
    ```python
    gym.make("bilevel/FourRooms-v0", x=np.zeros(105), context=0, move_prob=2/3, beta=1.0)
    ```
    ``render_mode``: ``"ansi"`` (text grid) or ``"rgb_array"``.

    ## References
    Thoma et al., "Contextual Bilevel Reinforcement Learning for Incentive Alignment", NeurIPS 2024.

    ## Version History
    * v0: initial release (reward timing and goal handling as in the authors' code).
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}

    def __init__(self, x: np.ndarray | None = None, context: Any = 0,
                 move_prob: float = DEFAULT_MOVE_PROB, beta: float = 1.0,
                 render_mode: str | None = None):
        self.problem = FourRoomsShaping(lam=1.0, beta=beta, move_prob=move_prob)
        self.x = self.problem.check_x(np.zeros(N_PARAMS) if x is None else x)
        self.context = self.problem.context_index(context)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None;"
                             f" got {render_mode!r}")
        self.render_mode = render_mode
        self.goal = GOAL_STATES[self.context]
        sigma = softmax(self.x)
        self._reward = follower_state_reward(sigma, self.goal)
        self._leader_reward = leader_state_reward(sigma, self.goal, beta)
        self._direction_cdf = np.cumsum(direction_probs(move_prob), axis=1)
        self.observation_space = spaces.Discrete(N_CELLS)
        self.action_space = spaces.Discrete(N_ACTIONS)
        self.s = START_STATE

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.s = START_STATE
        if options and "state" in options:
            s = options["state"]
            if not (isinstance(s, (int, np.integer)) and 0 <= int(s) < N_CELLS):
                raise ValueError(f"options['state'] must be a cell index in 0..{N_CELLS - 1}; "
                                 f"got {s!r}")
            self.s = int(s)
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
        return None


def render_text(agent: int, goal: int) -> str:
    """The map as text: ``A`` agent, ``G`` active goal, ``+`` target."""
    grid = [list(row) for row in MAP]
    for state, ch in ((TARGET_STATE, "+"), (goal, "G"), (agent, "A")):
        r, c = CELLS[state]
        grid[r][c] = ch
    return "\n".join("".join(row) for row in grid) + "\n"


def render_rgb(agent: int, goal: int, penalty: np.ndarray, scale: int = 16) -> np.ndarray:
    """An RGB image: walls dark, cells shaded red by penalty, goal green, target blue, agent gold."""
    img = np.full((len(MAP), len(MAP[0]), 3), 40, dtype=np.uint8)
    strength = np.abs(penalty) / max(float(np.abs(penalty).max()), 1e-12)
    for s, (r, c) in enumerate(CELLS):
        fade = int(200 * strength[s])
        img[r, c] = (255, 255 - fade, 255 - fade)
    for state, colour in ((TARGET_STATE, (60, 90, 230)), (goal, (40, 180, 60)),
                          (agent, (230, 180, 20))):
        r, c = CELLS[state]
        img[r, c] = colour
    return np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)


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
    Truncated after ``horizon`` leader steps; never terminates.

    ## Information
    ``"rollouts"`` (dict of ``(n_envs, T)`` arrays: ``obs``, ``actions``, ``next_obs``, ``rewards``,
    ``leader_rewards``, ``terminated``, ``truncated``, ``context``, ``action_probs``, ``entropy``,
    ``episode_step``, ``mask``), ``"contexts"``, ``"objective_estimate"``, ``"follower_stats"``
    (and ``"objective_exact"`` with ``objective="exact"``).

    ## Arguments
    ```python
    gym.make("bilevel/FourRoomsShaping-v0", lam=0.001, beta=1.0, move_prob=2/3,
             follower="soft_vi", follower_kwargs=None, contexts="sample", n_followers=1,
             n_envs=5, n_rollout_steps=2000, horizon=1000, objective="monte_carlo")
    ```

    ## References
    Thoma et al., "Contextual Bilevel Reinforcement Learning for Incentive Alignment", NeurIPS 2024.

    ## Version History
    * v0: initial release.
    """

    def __init__(self, lam: float = 0.001, beta: float = 1.0,
                 move_prob: float = DEFAULT_MOVE_PROB, **kwargs: Any):
        super().__init__(FourRoomsShaping(lam=lam, beta=beta, move_prob=move_prob), **kwargs)
