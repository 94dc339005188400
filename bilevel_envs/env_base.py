"""What every Gymnasium env of the library shares with the ecosystem's conventions: the
render-mode check that Gymnasium and Stable-Baselines3 expect, and an ``env.spec`` of plain data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.registration import EnvSpec


def check_render_mode(render_mode: str | None, metadata: Mapping[str, Any], owner: str
                      ) -> str | None:
    """``render_mode`` if it is ``None`` or one of ``metadata["render_modes"]``.

    Raises:
        TypeError: naming ``render_mode``, ``owner`` and the declared modes, for any other mode.
            A ``TypeError`` rather than a ``ValueError`` because that is what the tools built on
            Gymnasium treat as "this env does not take this render mode": Stable-Baselines3's
            ``make_vec_env`` asks every env for ``render_mode="rgb_array"`` and builds it without
            one only on a ``TypeError``. ``gym.make`` has warned about the undeclared mode
            already.
    """
    modes = list(metadata.get("render_modes", []))
    if render_mode is None or render_mode in modes:
        return render_mode
    raise TypeError(f"render_mode must be one of {modes} or None; got {render_mode!r} ({owner} "
                    f"does not render it)")


def plain_kwargs(value: Any) -> Any:
    """``value`` with every NumPy array and scalar (inside dicts, lists and tuples) replaced by the
    equivalent Python value; containers and keys keep their types, other objects are kept."""
    if isinstance(value, dict):
        return {k: plain_kwargs(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain_kwargs(v) for v in value)
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    return value


class BilevelEnvBase(gym.Env):
    """A :class:`gymnasium.Env` whose ``spec`` stores its keyword arguments as plain data.

    ``gym.make(id, x=np.zeros(105))`` records the call's kwargs in ``env.spec``; with an array
    there, ``env.spec.to_json()`` fails. This base class converts arrays and NumPy scalars to lists
    and numbers when the spec is set, so specs serialise and ``gym.make(env.spec)`` rebuilds the
    same env (every env of the library accepts lists wherever it accepts arrays). Objects without a
    plain form (a ``problem=`` or a follower instance) are kept as they are.
    """

    @property
    def spec(self) -> EnvSpec | None:  # type: ignore[override]
        return self.__dict__.get("_plain_spec")

    @spec.setter
    def spec(self, value: EnvSpec | None) -> None:
        if value is not None and value.kwargs:
            value = dataclasses.replace(value, kwargs=plain_kwargs(dict(value.kwargs)))
        self.__dict__["_plain_spec"] = value

    def _check_render_mode(self, render_mode: str | None) -> str | None:
        return check_render_mode(render_mode, self.metadata, type(self).__name__)

    def _warn_no_render_mode(self) -> None:
        """Gymnasium's warning for ``render()`` on an env made without a render mode."""
        gym.logger.warn("You are calling render method without specifying any render mode; "
                        f"pass render_mode= one of {self.metadata.get('render_modes', [])} to "
                        "gym.make")
