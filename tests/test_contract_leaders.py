"""Leaders on contract design: HPGD, AMD and zero-order within 1 % of the exact optimum of the
project instance (two λ, two types), why they start at a revenue share, why AMD is not clipped,
and the `bilevel-bench contract` command."""

import json

import numpy as np
import pytest

from bilevel_bench.cli import main as bench
from bilevel_bench.experiments import contract
from bilevel_envs.envs.contract_design import closed_forms as cd
from bilevel_envs.exact import ExactSolver
from leaders import AMD
from leaders.optim import clip_by_norm

#: iterations per leader: HPGD's estimates average both types before clipping and converge
#: fast; AMD (one sampled type per step) and zero-order (one random direction per step) need
#: small steps against their noise (see docs/contract_design.md).
ITERATIONS = {"hpgd": 300, "amd": 3000, "zero_order": 3000}
PROJECT_CASES = ("project_lam0.1", "project_lam0.02", "project_2types")


@pytest.mark.parametrize("algorithm", contract.ALGORITHMS)
@pytest.mark.parametrize("instance", PROJECT_CASES)
def test_each_leader_reaches_one_percent_of_the_exact_project_optimum(instance, algorithm):
    """J of the final contract within 1 % of J* from the exact 1-d search (the optimum is unique
    in J, not in x: a ridge along x(work→success) + γ x(success→work)). The bench settings."""
    spec = contract.contract_spec(instance, algorithm, seed=0,
                                  iterations=ITERATIONS[algorithm])
    leader = contract.make_leader(spec)
    optimum = cd.project_optimum(leader.problem)
    assert leader.exact_objective() < 0.95 * optimum.objective  # the start is far off
    leader.learn(spec["iterations"])
    J = ExactSolver(leader.problem).objective(leader.x)
    assert J <= optimum.objective + 1e-9
    assert J >= 0.99 * optimum.objective, f"{100 * (1 - J / optimum.objective):.2f} % below J*"


def test_no_payments_is_a_spurious_local_optimum_of_the_project():
    """At λ = 0.02 a small bonus does not move the soft agent, so from x = 0 paying more only
    costs: the exact gradient points into the bound on every payment and a gradient method
    stays at J(0), far below J*. Hence the bench's start at half the revenue."""
    problem = contract.make_problem("project_lam0.02")
    x0 = np.zeros(problem.n_params)
    _, grad = ExactSolver(problem).value_and_grad(x0)
    assert np.all(grad < 0)
    env = contract.make_leader(contract.contract_spec("project_lam0.02", "amd", 0)).env
    leader = AMD(env, learning_rate=0.002, max_grad_norm=None, inner="exact", x0=x0, seed=0)
    leader.learn(300)
    optimum = cd.project_optimum(problem)
    assert leader.exact_objective() < 0.4 * optimum.objective
    np.testing.assert_array_equal(leader.x, 0.0)
    np.testing.assert_array_equal(contract.revenue_share(problem, 0.5), [1.0, 0.0, 0.0, 0.0])


def test_clipping_sampled_type_gradients_moves_the_fixed_point():
    """Two types at λ = 0.05: the types' gradients disagree (the diligent one wants less, the
    lazy one much more), so the mean of the *clipped* per-type gradients (what a clipped AMD
    step follows on average) vanishes near u ≈ 0.76 where J still rises steeply; J* is at
    u ≈ 0.86. The bench runs AMD without clipping."""
    problem = contract.make_problem("project_2types")
    solver = ExactSolver(problem)
    gamma = problem.gamma

    def slopes(u):
        g = solver.per_context(np.array([u, 0.0, 0.0, 0.0]), with_gradient=True).gradient
        clipped = np.mean([clip_by_norm(gi, 1.0) for gi in g], axis=0)
        full = problem.context_probs @ g
        return clipped[0] + gamma * clipped[2], full[0] + gamma * full[2]

    (clipped_lo, full_lo), (clipped_hi, full_hi) = slopes(0.74), slopes(0.78)
    assert clipped_lo > 0 > clipped_hi  # the clipped drift changes sign ...
    assert full_lo > 5 and full_hi > 5  # ... where J still rises steeply
    assert cd.project_optimum(problem).success_pay == pytest.approx(0.86, abs=0.01)


def test_reference_optimum():
    ref = contract.reference_optimum("project_2types")
    assert ref["objective"] == pytest.approx(cd.project_optimum(
        contract.make_problem("project_2types")).objective)
    tree = contract.reference_optimum("tree", starts=2)
    problem = contract.make_problem("tree")
    solver = ExactSolver(problem)
    assert solver.objective(np.array(tree["x"])) == pytest.approx(tree["objective"])
    assert tree["objective"] > solver.objective(contract.revenue_share(problem, 0.5))


def test_specs_are_plain_data_and_validated():
    spec = contract.contract_spec("tree", "amd", 3, iterations=10)
    assert json.loads(json.dumps(spec)) == spec and spec["max_grad_norm"] is None
    with pytest.raises(ValueError, match="unknown instance 'moon'"):
        contract.contract_spec("moon", "amd", 0)
    with pytest.raises(ValueError, match="algorithm must be one of"):
        contract.contract_spec("tree", "sgd", 0)
    with pytest.raises(ValueError, match=r"unknown spec fields \['colour'\]"):
        contract.contract_spec("tree", "amd", 0, colour=1)
    with pytest.raises(ValueError, match="share must be in"):
        contract.revenue_share(contract.make_problem("grid"), 1.5)


def test_bench_contract_smoke(tmp_path, capsys):
    """The command end to end with a tiny budget: results per run, table, figures; a rerun
    reuses the results on disk."""
    args = ["contract", "--instances", "project_2types", "grid", "--iterations", "4",
            "--eval-every", "2", "--seeds", "1", "--workers", "1", "--out", str(tmp_path)]
    assert bench(args) == 0
    runs = sorted((tmp_path / "runs").glob("*.json"))
    assert len(runs) == 6
    table = (tmp_path / "contract.md").read_text()
    for name in ("project_2types", "grid", "HPGD", "AMD", "Zero-Order", "exact optimum"):
        assert name in table
    rows = json.loads((tmp_path / "contract.json").read_text())["rows"]
    assert all(r["gap_percent"] > -1e-6 for r in rows)
    result = json.loads(runs[0].read_text())
    assert result["curve"]["iteration"] == [0, 2, 4]
    for figure in ("learning_curves.png", "payments.png"):
        assert (tmp_path / figure).stat().st_size > 10_000
    stamps = [p.stat().st_mtime_ns for p in runs]
    assert bench(args + ["--no-plots"]) == 0
    assert [p.stat().st_mtime_ns for p in runs] == stamps
    assert "contract design: 6 runs" in capsys.readouterr().out
