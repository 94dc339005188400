"""The library objects a submission works with, built in the grading child from plain data, and
the conversion of what the submission returns back to plain data.

The parent describes an object (:class:`~bilevel_teaching.calls.Build`) and the child builds it
with :data:`BUILDERS`: a ``TabularModel`` from its arrays, the contract-design problem from its
keyword arguments, the HPGD assignment's :class:`ProblemView` and :class:`OracleView` (the
follower's soft-optimal policy is computed by the parent and sent as a table). These objects are
the student's environment: the submission may use or even break them, but only what it returns
is judged, by the parent. :data:`PREPARE` imports what each assignment needs and warms up the
compiled kernels before the submission is imported, so that nothing has to be compiled (and
cached to disk) while the submission's code runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from bilevel_envs.rollouts import Rollouts

#: arrays larger than this are not sent back (no assignment asks for more)
MAX_ELEMENTS = 20_000_000


# ---------------------------------------------------------------------------- HPGD's view
class ProblemView:
    """The problem as HPGD sees it: discounts, λ, sizes and per-transition derivative terms.

    Every ``grad_*`` method takes arrays of ``N`` transitions and returns ``(N, d)``.
    """

    def __init__(self, problem: Any):
        self._problem = problem
        self.lam: float = problem.lam
        self.gamma: float = problem.gamma
        self.leader_gamma: float = problem.leader_gamma
        self.n_params: int = problem.n_params
        self.n_states: int = problem.follower_observation_space.n
        self.n_actions: int = problem.follower_action_space.n

    def grad_follower_reward(self, x, context, obs, actions, next_obs) -> np.ndarray:
        """``∂x r(s, a)``, shape ``(N, d)``."""
        return self._problem.grad_follower_reward(x, context, obs, actions, next_obs)

    def grad_leader_reward(self, x, context, obs, actions, next_obs) -> np.ndarray:
        """``∂x r̄(s, a)``, shape ``(N, d)``."""
        return self._problem.grad_leader_reward(x, context, obs, actions, next_obs)

    def grad_log_transition(self, x, context, obs, actions, next_obs) -> np.ndarray:
        """``∂x log P(s'|s, a)``, shape ``(N, d)`` (meaningful for transitions that continue)."""
        return self._problem.grad_log_transition(x, context, obs, actions, next_obs)

    def grad_log_initial(self, x, context, obs) -> np.ndarray:
        """``∂x log μ(s_0)``, shape ``(N, d)``."""
        return self._problem.grad_log_initial(x, context, obs)

    def __repr__(self) -> str:
        return (f"ProblemView(lam={self.lam}, gamma={self.gamma}, leader_gamma="
                f"{self.leader_gamma}, n_states={self.n_states}, n_actions={self.n_actions}, "
                f"n_params={self.n_params})")


class OracleView:
    """The follower's trajectory oracle (paper Assumption 3.2): sampling only.

    Trajectories follow the follower's soft-optimal policy in the infinite-horizon MDP; a chain
    stops when its episode terminates (later entries have ``mask == False``).
    """

    def __init__(self, oracle: Any):
        self._oracle = oracle

    def rollout(self, rng: np.random.Generator, n_envs: int, n_steps: int, *,
                start_states=None, start_actions=None, lengths=None) -> Rollouts:
        """Sample ``n_envs`` chains of at most ``n_steps`` transitions.

        Args:
            rng: the source of randomness.
            start_states: ``(n_envs,)`` first states; ``-1`` (or ``None`` for all): from μ.
            start_actions: ``(n_envs,)`` first actions; ``-1`` (or ``None`` for all): from π.
            lengths: ``(n_envs,)`` number of transitions of each chain (``≤ n_steps``).

        Returns:
            :class:`~bilevel_envs.rollouts.Rollouts`: arrays ``(n_envs, n_steps)`` ``obs``,
            ``actions``, ``next_obs``, ``rewards`` (follower), ``leader_rewards``, ``entropy``
            (``H(π(·|s_t))``), ``terminated``, ``mask`` (real transitions).
        """
        return self._oracle.rollout(rng, n_envs, n_steps, start_states=start_states,
                                    start_actions=start_actions, lengths=lengths,
                                    auto_reset=False, time_limit=False)


def garnet_problem(kwargs: Mapping[str, Any]) -> Any:
    from bilevel_envs.envs.garnet import GarnetProblem

    return GarnetProblem(**kwargs)


def problem_view(params: Mapping[str, Any]) -> ProblemView:
    return ProblemView(garnet_problem(params["problem"]))


def oracle_view(params: Mapping[str, Any]) -> OracleView:
    """The oracle of the follower's policy ``params["pi"]`` at ``x``, ``context``."""
    from bilevel_envs.oracles import TabularOracle
    from bilevel_envs.policies import TabularPolicy

    problem = garnet_problem(params["problem"])
    x = np.asarray(params["x"], dtype=np.float64)
    model = problem.tabular(x, params["context"])
    return OracleView(TabularOracle(problem, x, params["context"], TabularPolicy(params["pi"]),
                                    model=model))


# ---------------------------------------------------------------------------- other objects
def tabular_model(params: Mapping[str, Any]) -> Any:
    """A ``TabularModel`` from its arrays (``None`` for the optional derivatives)."""
    from bilevel_envs.tabular import TabularModel

    return TabularModel(**params)


def contract_design(params: Mapping[str, Any]) -> Any:
    from bilevel_envs.envs.contract_design.problem import ContractDesign

    return ContractDesign(**params)


#: kind -> builder of an object from plain-data parameters
BUILDERS: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "tabular_model": tabular_model, "contract_design": contract_design,
    "hpgd_problem": problem_view, "hpgd_oracle": oracle_view,
}


# ---------------------------------------------------------------------------- conversions
def _array(value: Any) -> np.ndarray | str:
    """``value`` as a float array, or why it is not one."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except Exception:  # noqa: BLE001 - any failure of the submission's object
        return f"a {type(value).__name__}"
    if array.size > MAX_ELEMENTS:
        return f"an array of {array.size} numbers (too large)"
    return array


def convert(value: Any, returns: str) -> dict[str, Any]:
    """The result entry ``{"ok": plain data}`` or ``{"unconvertible": reason}`` of a value."""
    if returns == "array":
        array = _array(value)
        return {"ok": array} if isinstance(array, np.ndarray) else {"unconvertible": array}
    if returns == "number":
        try:
            return {"ok": float(value)}
        except Exception:  # noqa: BLE001
            return {"unconvertible": f"a {type(value).__name__}"}
    if returns == "pair":
        if not (isinstance(value, (tuple, list)) and len(value) == 2):
            return {"unconvertible": f"a {type(value).__name__}"}
        first, second = _array(value[0]), _array(value[1])
        for part in (first, second):
            if not isinstance(part, np.ndarray):
                return {"unconvertible": f"a pair holding {part}"}
        return {"ok": [first, second]}
    if returns == "leader":
        return leader_summary(value)
    raise ValueError(f"unknown return kind {returns!r}")


def leader_summary(value: Any) -> dict[str, Any]:
    """What the design checks need to know about a trained leader, as plain data."""
    from leaders.base import Leader

    if not isinstance(value, Leader):
        return {"unconvertible": f"a {type(value).__name__}"}
    x = _array(value.x)
    if not isinstance(x, np.ndarray):
        return {"unconvertible": f"a leader whose x is {x}"}
    return {"ok": {"type": type(value).__name__, "num_iterations": int(value.num_iterations),
                   "x": x, "problem": problem_summary(value.problem)}}


def problem_summary(problem: Any) -> dict[str, Any]:
    """The identity of a contract-design problem as plain data (to compare it with another)."""
    from bilevel_envs.plain_data import to_plain_data

    summary: dict[str, Any] = {"type": type(problem).__name__}
    for name in ("instance", "instance_kwargs", "lam", "gamma", "x_max", "cost_scales",
                 "context_probs"):
        if hasattr(problem, name):
            summary[name] = _plain(to_plain_data(getattr(problem, name)))
    return summary


def _plain(value: Any, depth: int = 0) -> Any:
    """``value`` if it is JSON-like plain data (numbers, strings, lists, dicts), else its
    ``repr`` (a submission may put anything in its objects)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if depth < 6 and isinstance(value, list):
        return [_plain(v, depth + 1) for v in value[:1000]]
    if depth < 6 and isinstance(value, dict):
        return {str(k): _plain(v, depth + 1) for k, v in list(value.items())[:1000]}
    try:
        return repr(value)[:200]
    except Exception:  # noqa: BLE001
        return f"<{type(value).__name__}>"


# ---------------------------------------------------------------------------- preparation
def _prepare_soft_vi() -> None:
    import bilevel_envs.tabular  # noqa: F401


def _prepare_hpgd() -> None:
    from bilevel_envs.envs.garnet import GarnetProblem

    problem = GarnetProblem(n_states=3, n_actions=2, n_params=2)
    x = np.zeros(problem.n_params)
    pi = np.full((3, 2), 0.5)
    view = oracle_view({"problem": {"n_states": 3, "n_actions": 2, "n_params": 2}, "x": x,
                        "context": 0, "pi": pi})
    rollouts = view.rollout(np.random.default_rng(0), 2, 3, lengths=np.array([3, 3]))
    ProblemView(problem).grad_follower_reward(x, 0, rollouts.obs[0], rollouts.actions[0],
                                              rollouts.next_obs[0])


def _prepare_design() -> None:
    import gymnasium as gym

    import bilevel_envs  # noqa: F401  (registers the env ids)
    from leaders import HPGD

    env = gym.make("bilevel/ContractDesign-v0", instance="project", contexts="all", n_envs=1,
                   n_rollout_steps=10)
    HPGD(env, seed=0).learn(1)


#: assignment -> what to import and run before the submission is imported
PREPARE: dict[str, Callable[[], None]] = {
    "soft_vi": _prepare_soft_vi, "hpgd_estimator": _prepare_hpgd, "design": _prepare_design,
}
