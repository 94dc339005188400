"""PettingZoo view of tax design: many households, one shared tax schedule ``x``.

PettingZoo's module layout: ``parallel_env`` (the native Parallel API), ``raw_env`` (the same
env through PettingZoo's AEC API, one household acting at a time) and ``env`` (``raw_env`` with
PettingZoo's usual wrappers: action bounds asserted, API order enforced).

```python
import numpy as np
from bilevel_envs.envs import households_v0

env = households_v0.parallel_env(x=np.full(4, 0.3), households=[0, 0, 1, 1])
observations, infos = env.reset(seed=0)
while env.agents:
    actions = {agent: env.action_space(agent).sample() for agent in env.agents}
    observations, rewards, terminations, truncations, infos = env.step(actions)
env.state()  # the planner's view: every household's assets

aec = households_v0.env(households=[0, 1])  # AEC API
aec.reset(seed=0)
for agent in aec.agent_iter():
    observation, reward, termination, truncation, info = aec.last()
    aec.step(None if termination or truncation else aec.action_space(agent).sample())
```

Needs the ``pettingzoo`` extra (``pip install "bilevel-envs[pettingzoo]"``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding

try:
    from pettingzoo import AECEnv, ParallelEnv
    from pettingzoo.utils import parallel_to_aec, wrappers
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "bilevel_envs.envs.households_v0 needs PettingZoo; install the extra with "
        "pip install \"bilevel-envs[pettingzoo]\"") from exc

from bilevel_envs.env_base import check_render_mode
from bilevel_envs.envs.tax_design import model as hh
from bilevel_envs.envs.tax_design.problem import TaxDesign, TaxDesignTabular
from bilevel_envs.validation import check_int, check_options

__all__ = ["HouseholdsParallelEnv", "env", "parallel_env", "raw_env"]


class HouseholdsParallelEnv(ParallelEnv):
    """## Description
    Several households of the tax-design economy (paper §5.2) acting simultaneously under one tax
    schedule ``x`` set by the government. Each agent is one :class:`HouseholdEnv` household of a
    preference group; households do not interact (the paper's economy has no prices or markets
    that couple them), so this is the follower level of the bilevel problem with one learner per
    household — train independent learners through it, and read the welfare each household
    generates from ``infos``.

    ## Agents
    ``household_0 .. household_{n−1}``; ``households`` gives each one's preference group: a list
    of group indices (or α tuples), e.g. ``[0, 0, 1, 1]``, or counts per group ``{0: 2, 1: 2}``.
    Default: one household per group.

    ## Leader parameter x
    ``x = (x_inc, y_1..y_M)``, shared by all agents; bounds as in ``bilevel/Household-v0``
    (``[0, 2]`` code variant, ``[0, 3]`` paper variant).

    ## Action Space
    Per agent ``Discrete(n_hours · n_cons^M)`` (1250 by default), as in ``Household-v0``.

    ## Observation Space
    Per agent ``Box(−100, 100, (1,), float64)`` (its assets), or ``Discrete(asset_cells)`` with
    ``asset_cells``.

    ## Starting State
    Each agent's assets ``clip(√2 N(0, 1), ±100)`` (its cell with ``asset_cells``), independently;
    or ``reset(options={"state": {agent: s, ...}})`` for some or all agents.

    ## Rewards
    Each agent: its utility ``u = σ(s) − θ n² + Π_i (c_i/(p_i(1+y_i)))^{α_i}`` with its group's α.
    ``infos[agent]["leader_reward"]``: the welfare ``v`` it generates (see ``Household-v0``).

    ## Episode End
    No termination; all agents are truncated together after ``max_cycles`` steps (default 200).

    ## State
    ``state()``: the planner's view of the economy, every household's assets in agent order
    (the centre of its asset cell with ``asset_cells``), in
    ``state_space = Box(−100, 100, (n,), float64)``.

    ## Information
    Per agent: ``"group"``, ``"assets"``; after a step also ``"leader_reward"``, ``"hours"``,
    ``"consumption"``.

    ## Rendering
    ``render_mode="ansi"``: ``render()`` returns one line per household (its last hours,
    consumption and assets); ``"human"``: the same text is printed after every ``reset`` and
    ``step`` (and by ``render()``, which returns ``None``). Other modes raise ``TypeError``.

    ## Arguments
    ```python
    households_v0.parallel_env(x=None, households=None, variant="code", asset_cells=None,
                               max_cycles=None, render_mode=None, **household_params)
    ```

    ## References
    Thoma et al., "Contextual Bilevel Reinforcement Learning for Incentive Alignment", NeurIPS 2024
    (§5.2, App. F.3); PettingZoo's Parallel API (Terry et al., NeurIPS 2021).

    ## Version History
    * v0: initial release.
    """

    metadata = {"name": "households_v0", "render_modes": ["human", "ansi"],
                "is_parallelizable": True, "render_fps": 4}

    def __init__(self, x: Any = None, households: Sequence[Any] | Mapping[Any, int] | None = None,
                 variant: str = "code", asset_cells: int | None = None,
                 max_cycles: int | None = None, render_mode: str | None = None,
                 **household_params: Any):
        self.render_mode = check_render_mode(render_mode, self.metadata, "households_v0")
        self.problem = (TaxDesign(variant, **household_params) if asset_cells is None else
                        TaxDesignTabular(variant, asset_cells=asset_cells, **household_params))
        problem = self.problem
        self.x = problem.check_x(problem.x_init if x is None else x, name="x")
        self.groups = self._parse_households(households)
        self._alpha = problem.params.alpha[self.groups]
        self.possible_agents = [f"household_{i}" for i in range(len(self.groups))]
        self._index = {agent: i for i, agent in enumerate(self.possible_agents)}
        self.max_cycles = problem.max_episode_steps if max_cycles is None else max_cycles
        if not (isinstance(self.max_cycles, (int, np.integer)) and self.max_cycles >= 1):
            raise ValueError(f"max_cycles must be an integer >= 1; got {max_cycles!r}")
        # One space object per agent (so each can be seeded), returned unchanged on every call.
        self.observation_spaces = {a: self._make_observation_space()
                                   for a in self.possible_agents}
        self.action_spaces = {a: spaces.Discrete(problem.params.n_actions)
                              for a in self.possible_agents}
        bound = problem.params.asset_bound
        self.state_space = spaces.Box(-bound, bound, shape=(len(self.groups),), dtype=np.float64)
        self.agents: list[str] = []
        self._np_random, _ = seeding.np_random(None)
        self._state = problem.sample_initial_obs(np.full(len(self.groups), 0.5))
        self._t = 0
        self._last: dict[str, str] = {}

    def _make_observation_space(self) -> spaces.Space:
        space = self.problem.follower_observation_space
        if isinstance(space, spaces.Discrete):
            return spaces.Discrete(int(space.n))
        return spaces.Box(space.low, space.high, dtype=np.float64)

    def _parse_households(self, households) -> np.ndarray:
        problem = self.problem
        if households is None:
            return np.arange(problem.n_contexts)
        if isinstance(households, Mapping):
            groups = []
            for group, count in households.items():
                count = check_int(f"households[{group!r}] (a count)", count, 0)
                groups += [self._group(group)] * count
        elif isinstance(households, (str, bytes)) or not isinstance(households, Sequence):
            raise ValueError("households must be a list of preference groups (indices in "
                             f"0..{problem.n_contexts - 1} or α tuples) or a dict of counts per "
                             f"group; got {households!r}")
        else:
            groups = [self._group(g) for g in households]
        if not groups:
            raise ValueError("households must name at least one household")
        return np.asarray(groups, dtype=np.int64)

    def _group(self, group: Any) -> int:
        try:
            return self.problem.context_index(group)
        except KeyError:
            raise KeyError(f"unknown household group {group!r} in households; expected an index "
                           f"in 0..{self.problem.n_contexts - 1} or one of "
                           f"{list(self.problem.context_values)}") from None

    # ------------------------------------------------------------------ PettingZoo API
    def observation_space(self, agent: str) -> spaces.Space:
        return self.observation_spaces[agent]

    def action_space(self, agent: str) -> spaces.Space:
        return self.action_spaces[agent]

    def reset(self, seed: int | None = None, options: dict | None = None):
        options = check_options(options, None)  # PettingZoo: other keys pass without a word
        if seed is not None:
            self._np_random, _ = seeding.np_random(seed)
            for i, agent in enumerate(self.possible_agents):
                self.action_spaces[agent].seed(seed + i)
                self.observation_spaces[agent].seed(seed + i)
        self.agents = list(self.possible_agents)
        self._t = 0
        self._last = {}
        self._state = self.problem.sample_initial_obs(self._np_random.random(len(self.groups)))
        given = options.get("state")
        if given is not None:
            if not isinstance(given, Mapping):
                raise ValueError("options['state'] must map agent names to initial states; got "
                                 f"{given!r}")
            for agent, state in given.items():
                if agent not in self._index:
                    raise KeyError(f"options['state'] names unknown agent {agent!r}; agents are "
                                   f"{self.possible_agents}")
                self._state[self._index[agent]] = self.problem.check_obs(
                    state, name=f"options['state'][{agent!r}]")
        assets = self.problem.assets_of(self._state)
        observations = {a: self._observation(i) for i, a in enumerate(self.agents)}
        infos = {a: {"group": int(self.groups[i]), "assets": float(assets[i])}
                 for i, a in enumerate(self.agents)}
        if self.render_mode == "human":
            self.render()
        return observations, infos

    def step(self, actions: Mapping[str, Any]):
        if not self.agents:
            return {}, {}, {}, {}, {}
        missing = [a for a in self.agents if a not in actions]
        if missing:
            raise ValueError(f"actions are missing for live agents {missing}")
        idx = np.array([self._index[a] for a in self.agents])
        chosen = []
        for agent in self.agents:
            action = actions[agent]
            if not self.action_spaces[agent].contains(action):
                raise ValueError(f"action of {agent} must be an integer in "
                                 f"0..{self.action_spaces[agent].n - 1}; got {action!r}")
            chosen.append(int(action))
        a = np.asarray(chosen, dtype=np.int64)

        # All households at once: the rewards with each one's preferences, one noise draw each.
        problem, params = self.problem, self.problem.params
        state = self._state[idx]
        assets = problem.assets_of(state)
        hours, consumption = problem.hours[a], problem.consumption[a]
        income_tax, vat = hh.split_taxes(self.x)
        utility = hh.household_utility(assets, hours, consumption, vat, self._alpha[idx], params)
        welfare = hh.social_welfare(assets, hours, consumption, income_tax, vat, params)
        self._state[idx] = problem.sample_next_obs(self.x, state, a,
                                                   self._np_random.random(idx.size))
        new_assets = problem.assets_of(self._state[idx])
        self._t += 1
        done = self._t >= self.max_cycles

        observations, rewards, terminations, truncations, infos = {}, {}, {}, {}, {}
        for j, agent in enumerate(self.agents):
            i = idx[j]
            observations[agent] = self._observation(i)
            rewards[agent] = float(utility[j])
            terminations[agent] = False
            truncations[agent] = done
            infos[agent] = {"group": int(self.groups[i]), "assets": float(new_assets[j]),
                            "leader_reward": float(welfare[j]), "hours": float(hours[j]),
                            "consumption": tuple(float(c) for c in consumption[j])}
            self._last[agent] = (f"{agent} (group {self.groups[i]}): hours {hours[j]:5.2f} "
                                 f"consumption {infos[agent]['consumption']} assets "
                                 f"{new_assets[j]:8.2f}")
        if done:
            self.agents = []
        if self.render_mode == "human":
            self.render()
        return observations, rewards, terminations, truncations, infos

    def _observation(self, i: int) -> Any:
        state = self._state[i]
        # NumPy values as Discrete.sample() gives them (PettingZoo's checker reads their dtype)
        return np.int64(state) if self.problem.is_tabular else np.array(state, dtype=np.float64)

    def state(self) -> np.ndarray:
        """Every household's assets, in the order of ``possible_agents`` (``state_space``)."""
        return np.asarray(self.problem.assets_of(self._state), dtype=np.float64)

    def render(self) -> str | None:
        if self.render_mode is None:
            gymnasium.logger.warn("You are calling render method without specifying any render "
                                  "mode; pass render_mode='ansi' or 'human'")
            return None
        if not self._last:
            assets = self.problem.assets_of(self._state)
            text = "\n".join(f"{a}: assets {assets[i]:8.2f}"
                             for i, a in enumerate(self.possible_agents)) + "\n"
        else:
            text = "\n".join(self._last.values()) + "\n"
        if self.render_mode == "human":
            print(text, end="")
            return None
        return text

    def close(self) -> None:
        pass


def parallel_env(**kwargs: Any) -> HouseholdsParallelEnv:
    """A :class:`HouseholdsParallelEnv` (PettingZoo's ``parallel_env`` convention); arguments as
    for the class."""
    return HouseholdsParallelEnv(**kwargs)


def raw_env(**kwargs: Any) -> AECEnv:
    """The households through PettingZoo's AEC API (households act one after another within a
    step; the economy moves once all have acted), without wrappers; arguments as for
    :class:`HouseholdsParallelEnv`."""
    return parallel_to_aec(parallel_env(**kwargs))


def env(**kwargs: Any) -> AECEnv:
    """:func:`raw_env` with PettingZoo's usual wrappers: out-of-bounds actions raise, and the API
    order (``reset`` before ``step``, ...) is enforced; arguments as for
    :class:`HouseholdsParallelEnv`."""
    aec = wrappers.AssertOutOfBoundsWrapper(raw_env(**kwargs))
    return wrappers.OrderEnforcingWrapper(aec)
