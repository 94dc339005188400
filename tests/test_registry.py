"""Plug-in leaders (leaders.registry): names, "module:Class", files, classes, callables, entry
points, and one clear error for every bad input."""

import importlib.metadata
import textwrap
import warnings

import numpy as np
import pytest

import leaders
from bilevel_envs import LeaderEnv
from bilevel_envs.envs.garnet import GarnetProblem
from leaders import HPGD, LEADERS, Leader, ZeroOrder
from leaders.registry import (
    BUILTIN_LEADERS,
    ENTRY_POINT_GROUP,
    accepted_kwargs,
    available_leaders,
    make_leader,
    resolve_leader,
)


def garnet_env():
    return LeaderEnv(GarnetProblem(), n_envs=2, n_rollout_steps=20)


class Doubling(ZeroOrder):
    """A third-party leader: ZeroOrder with twice the step (for the entry-point tests)."""

    algorithm = "doubling"

    def __init__(self, env, factor: float = 2.0, **kwargs):
        super().__init__(env, **kwargs)
        self.factor = factor


class NotALeader:
    pass


def fake_entry_points(monkeypatch, *entries):
    points = [importlib.metadata.EntryPoint(name, value, ENTRY_POINT_GROUP)
              for name, value in entries]
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group=None: [p for p in points if p.group == group])


# ---------------------------------------------------------------------------- lookup
def test_builtins_are_registered_without_entry_points(monkeypatch):
    fake_entry_points(monkeypatch)
    assert set(available_leaders()) == {"hpgd", "hpgd_rtq", "amd", "zero_order",
                                        "random_search"}
    assert LEADERS == BUILTIN_LEADERS and leaders.LEADERS["hpgd"] is HPGD
    assert resolve_leader("hpgd") is HPGD


def test_pyproject_registers_the_builtins_in_the_group():
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    data = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    declared = data["project"]["entry-points"][ENTRY_POINT_GROUP]
    assert declared == {name: f"{cls.__module__}:{cls.__name__}"
                        for name, cls in BUILTIN_LEADERS.items()}


def test_entry_points_are_discovered_and_broken_ones_only_warn(monkeypatch):
    fake_entry_points(monkeypatch,
                      ("hpgd", "leaders.hpgd:HPGD"),  # the built-in's own entry point
                      ("doubling", "tests.test_registry:Doubling"),
                      ("broken", "no_such_package.leaders:Thing"),
                      ("plain", "tests.test_registry:NotALeader"),
                      ("amd", "tests.test_registry:Doubling"))  # claims a built-in name
    with pytest.warns(UserWarning) as record:
        found = available_leaders()
    messages = " | ".join(str(w.message) for w in record)
    assert "'broken'" in messages and "failed to load" in messages
    assert "'plain'" in messages and "not a Leader" in messages
    assert "'amd'" in messages and "built-in" in messages
    assert found["doubling"] is Doubling and found["amd"] is BUILTIN_LEADERS["amd"]
    assert "broken" not in found and "plain" not in found
    assert len(record) == 3
    with warnings.catch_warnings():  # the same three warnings again
        warnings.simplefilter("ignore")
        leader = make_leader("doubling", garnet_env(), factor=3.0, seed=0)
    assert isinstance(leader, Doubling) and leader.factor == 3.0


def test_module_class_file_class_and_callable_specs(tmp_path):
    env = garnet_env()
    assert isinstance(make_leader("leaders.zero_order:ZeroOrder", env, seed=0), ZeroOrder)
    assert isinstance(make_leader(HPGD, env, seed=0), HPGD)
    path = tmp_path / "my_leader.py"
    path.write_text(textwrap.dedent("""
        import numpy as np
        from leaders import Leader

        class Still(Leader):
            def estimate_gradient(self):
                return np.zeros_like(self.x), {}
    """))
    still = make_leader(f"{path}:Still", env, seed=0, learning_rate=0.5)
    assert type(still).__name__ == "Still" and still.learning_rate == 0.5
    assert resolve_leader(f"{path}:Still") is type(still)  # imported once

    def factory(env, rate=0.3):
        return ZeroOrder(env, learning_rate=rate, seed=1)

    made = make_leader(factory, env, rate=0.2)
    assert isinstance(made, ZeroOrder) and made.learning_rate == 0.2
    made.learn(2)
    assert np.all(np.isfinite(made.x))


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("spec, message", [
    ("nope", r"unknown leader 'nope'; registered: \['amd', 'hpgd', 'hpgd_rtq', 'random_search', "
             r"'zero_order'\]"),
    ("no_such_package.mod:Leader", r"cannot import module 'no_such_package.mod'"),
    ("leaders.hpgd:Nope", r"module 'leaders.hpgd' has no attribute 'Nope'"),
    ("tests.test_registry:NotALeader", r"NotALeader, which is not a subclass of "
                                        r"leaders.base.Leader"),
    (NotALeader, r"not a subclass of leaders.base.Leader"),
    ("leaders.base:Leader", r"abstract class Leader"),
    ("leaders.registry:ENTRY_POINT_GROUP", r"names a str, not a Leader class or a callable"),
    (":Class", r"must read 'package.module:Class'"),
    ("missing/file.py:Class", r"no file 'missing/file.py'"),
])
def test_bad_specs_give_one_line_value_errors(spec, message):
    with pytest.raises(ValueError, match=message) as info:
        resolve_leader(spec)
    assert "\n" not in str(info.value)


def test_a_spec_of_another_type_is_a_type_error():
    with pytest.raises(TypeError, match="a leader spec must be a name"):
        resolve_leader(3)


def test_unimportable_file_is_a_value_error(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ValueError, match=r"cannot import .*broken.py.*RuntimeError: boom"):
        resolve_leader(f"{path}:Leader")


def test_kwargs_are_checked_before_construction(monkeypatch):
    built = []
    monkeypatch.setattr(HPGD, "__init__", lambda self, env, learning_rate=0.1, **kw:
                        built.append(1) or Leader.__init__(self, env, learning_rate, **kw))
    with pytest.raises(ValueError, match=r"HPGD does not accept \['learnig_rate'\]; it accepts "
                                         r"\[.*'learning_rate'.*\]"):
        make_leader("hpgd", garnet_env(), learnig_rate=0.1)
    assert not built
    with pytest.raises(ValueError, match="pass the env as make_leader's second argument"):
        make_leader("hpgd", garnet_env(), env=None)


def test_accepted_kwargs_follow_the_class_hierarchy_and_callables():
    names = accepted_kwargs(HPGD)
    assert {"learning_rate", "estimator", "n_samples", "seed", "x0", "optimizer"} <= names
    assert "env" not in names and "self" not in names
    assert accepted_kwargs(lambda env, a=1, *, b=2: None) == {"a", "b"}
    assert accepted_kwargs(lambda env, **kwargs: None) is None


def test_a_factory_that_returns_something_else_is_a_type_error():
    with pytest.raises(TypeError, match=r"returned a int, not a Leader"):
        make_leader(lambda env: 3, garnet_env())
