"""The follower protocol: how a follower responds to the leader's ``x`` in context ``ξ``."""

from __future__ import annotations

import abc
import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from bilevel_envs.budget import Budget
from bilevel_envs.policies import Policy

if TYPE_CHECKING:
    from bilevel_envs.problem import BilevelProblem
    from bilevel_envs.tabular import TabularModel


@dataclass
class FollowerResponse:
    """What a follower returns for one ``(x, ξ)``.

    Attributes:
        policy: the follower's (approximately optimal) policy ``π^o_{x,ξ}``.
        warm_start: whatever lets the next :meth:`Follower.respond` start from here (a Q-table,
            network weights, ...); pass it back unchanged.
        stats: plain-data diagnostics (iterations, residuals, wall time, ...).
        model: the exact model of ``M_{x,ξ}`` the follower solved or simulated, if it built one
            (tabular followers); the leader env samples and evaluates on it instead of asking the
            problem again.
        cost: what the response consumed, as a :class:`~bilevel_envs.budget.Budget`:
            ``transitions`` sampled while learning and ``follower_updates`` in the follower's own
            unit (one per exact solve, per Q-table update, per gradient step; see
            :mod:`bilevel_envs.budget`); never ``model_queries`` (those are the leader's).
            ``None``: not reported (the leader env then counts nothing and warns once).
    """

    policy: Policy
    warm_start: Any = None
    stats: dict[str, Any] = field(default_factory=dict)
    model: TabularModel | None = None
    cost: Budget | None = None


class Follower(abc.ABC):
    """A learner that solves the follower MDP ``M_{x,ξ}`` of a problem (paper Assumption 3.2).

    Subclasses are constructed from plain-data keyword arguments (so env specs stay
    JSON-serialisable) and implement :meth:`respond`; the response reports what it consumed
    (:attr:`FollowerResponse.cost`) for the leader env's budget accounting.
    """

    #: registry name (``follower="..."`` in a LeaderEnv)
    name: str = "follower"
    #: whether the response is the exact regularised best response on the problem's own model
    #: (its soft-optimality gap is the solver's tolerance, so a LeaderEnv does not measure it by
    #: default, see :mod:`bilevel_envs.follower_quality`)
    exact: bool = False

    @abc.abstractmethod
    def respond(self, problem: BilevelProblem, x: np.ndarray, context: Any,
                seed: int | None = None, warm_start: Any = None) -> FollowerResponse:
        """Solve ``M_{x,ξ}`` and return the follower's policy.

        Args:
            problem: the bilevel problem.
            x: the leader's (validated) parameter.
            context: the context index.
            seed: seed for any randomness of the learner.
            warm_start: the ``warm_start`` of a previous response in the same context, or None.
        """

    def supports(self, problem: BilevelProblem) -> bool:
        """Whether this follower can solve ``problem`` (e.g. tabular solvers need a model)."""
        return True

    def fork_warm_start(self, warm_start: Any) -> Any:
        """A copy of ``warm_start`` that :meth:`respond` may consume while ``warm_start`` itself
        stays as it is: common random numbers start several responses from one state (see
        :meth:`~bilevel_envs.leader_env.LeaderEnv.common_random_numbers`), and a learner that
        trains its warm start in place (an SB3 model) would otherwise start the second response
        from the first one's end. The default is a deep copy; a follower whose warm starts are
        never modified may return ``warm_start`` itself."""
        return copy.deepcopy(warm_start)

    def check_warm_start(self, problem: BilevelProblem, context: int, warm_start: Any) -> Any:
        """Validate a warm start read back from a checkpoint (array warm starts only; the
        default accepts none).

        Raises:
            ValueError: if this follower's responses never carry such a warm start, or it does
                not fit ``problem`` (shape, NaN).
        """
        raise ValueError(f"{type(self).__name__} does not resume from array warm starts; got "
                         f"one for context {context}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
