"""Train households through the PettingZoo view of tax design, then check them against the
exact soft-optimal response.

Four households (two per preference group) learn independently with tabular soft Q-learning
(paper Alg. 4; behaviour: the Boltzmann policy mixed with 10 % uniform exploration) in
``households_v0`` under one fixed tax schedule. A
small economy keeps it quick: assets on 21 cells, hours {0, 4, 8}, spending {0, 2.5, 5} per good
(81 actions). Because the asset grid makes the economy tabular, the learned policies can be
scored exactly: their soft value ``μ·V^π_λ`` against the optimum ``μ·V*`` (soft value iteration)
and the uniform policy, and the welfare ``J`` the government collects from them.

    python examples/tax_households_pettingzoo.py          # about 20 s on one core
"""

from __future__ import annotations

import numpy as np

from bilevel_envs.envs import households_v0
from bilevel_envs.envs.tax_design.problem import TaxDesignTabular
from bilevel_envs.tabular import evaluate_policy, soft_value_iteration, softmax_policy

ECONOMY = {"asset_cells": 21, "hours_levels": (0.0, 4.0, 8.0),
           "consumption_levels": (0.0, 2.5, 5.0)}
TAXES = np.array([0.3, 0.3, 0.3, 0.3])  # income tax, VAT on goods 1..3
EPISODES = 500


def soft_q_learning(env, episodes: int, lam: float, gamma: float, seed: int) -> np.ndarray:
    """Independent tabular soft Q-learning, one table per agent, all agents updated at once."""
    n_states = env.observation_space(env.possible_agents[0]).n
    n_actions = env.action_space(env.possible_agents[0]).n
    n = len(env.possible_agents)
    q = np.zeros((n, n_states, n_actions))
    visits = np.zeros_like(q)
    rng = np.random.default_rng(seed)
    agents = np.arange(n)
    obs, _ = env.reset(seed=seed)
    for _ in range(episodes):
        obs, _ = env.reset()
        s = np.array([obs[a] for a in env.possible_agents])
        while env.agents:
            # Behaviour: softmax(Q/λ) mixed with 10 % uniform exploration (soft Q-learning is
            # off-policy; the mixture keeps early noisy Q-gaps from locking actions out).
            probs = 0.9 * softmax_policy(q[agents, s], lam) + 0.1 / n_actions
            actions = (rng.random((n, 1)) > np.cumsum(probs, axis=1)).sum(1)
            actions = np.minimum(actions, n_actions - 1)
            obs, rewards, _, _, _ = env.step(dict(zip(env.possible_agents, actions.tolist())))
            s_next = np.array([obs[a] for a in env.possible_agents])
            r = np.array([rewards[a] for a in env.possible_agents])
            # Soft Bellman target; the 200-step limit is a truncation, so always bootstrap.
            v_next = lam * np.logaddexp.reduce(q[agents, s_next] / lam, axis=1)
            visits[agents, s, actions] += 1
            step = visits[agents, s, actions] ** -0.6
            q[agents, s, actions] += step * (r + gamma * v_next - q[agents, s, actions])
            s = s_next
    return q


def main() -> None:
    problem = TaxDesignTabular(**ECONOMY)
    env = households_v0.parallel_env(x=TAXES, households={0: 2, 1: 2}, **ECONOMY)
    lam, gamma = problem.lam, problem.gamma
    q = soft_q_learning(env, EPISODES, lam, gamma, seed=0)

    print(f"{EPISODES} episodes x 200 steps per household, λ = {lam}, taxes {TAXES.tolist()}")
    print(f"{'household':<12} {'group':>5} {'learned μ·V^π':>14} {'optimal μ·V*':>13} "
          f"{'uniform':>9} {'welfare J(π)':>13} {'J(π*)':>8}")
    uniform = np.full((problem.n_cells, problem.params.n_actions), 1 / problem.params.n_actions)
    for i, agent in enumerate(env.possible_agents):
        group = int(env.groups[i])
        model = problem.tabular(TAXES, group)
        optimum = soft_value_iteration(model, lam)
        learned = softmax_policy(q[i], lam)

        def soft_value(pi):
            return model.mu @ evaluate_policy(model, pi, lam=lam)

        def welfare(pi):
            return model.mu @ evaluate_policy(model, pi, reward=model.r_leader)

        print(f"{agent:<12} {group + 1:>5} {soft_value(learned):14.3f} "
              f"{model.mu @ optimum.v:13.3f} {soft_value(uniform):9.3f} "
              f"{welfare(learned):13.3f} {welfare(optimum.pi):8.3f}")


if __name__ == "__main__":
    main()
