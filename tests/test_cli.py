"""`bilevel-bench`: the table3 command end to end on a tiny budget."""

import json

import pytest

from bilevel_bench.cli import build_parser, main
from bilevel_bench.experiments.table3 import ALGORITHMS, TABLE3_CELLS, cell_name, load_selection


@pytest.fixture
def selection_file(tmp_path):
    selection = {cell_name(lam, beta): {"hpgd": {"learning_rate": 0.5},
                                         "amd": {"learning_rate": 0.5},
                                         "zero_order": {"learning_rate": 0.5,
                                                        "perturbation_constant": 0.5}}
                 for lam, beta in TABLE3_CELLS}
    path = tmp_path / "selection.json"
    path.write_text(json.dumps({"selection": selection}))
    return path


def test_table3_command_writes_table_json_and_figures(tmp_path, selection_file, capsys):
    out = tmp_path / "out"
    assert main(["table3", "--iterations", "20", "--seeds", "1", "--selection",
                 str(selection_file), "--out", str(out), "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert "| 0.001 | 1 | HPGD |" in printed and "Wall time of this invocation" in printed
    rows = json.loads((out / "table3.json").read_text())["rows"]
    assert len(rows) == len(TABLE3_CELLS) * len(ALGORITHMS)
    assert (out / "learning_curves.png").stat().st_size > 10_000
    assert (out / "penalties_lambda0.001_beta1.png").exists()
    # A rerun finds every run on disk and reruns nothing.
    assert main(["table3", "--iterations", "20", "--seeds", "1", "--selection",
                 str(selection_file), "--out", str(out), "--workers", "1", "--no-plots"]) == 0
    assert "0.0 min for 27 runs" in capsys.readouterr().out


def test_shipped_selection_covers_every_cell_and_algorithm():
    selection = load_selection()
    for lam, beta in TABLE3_CELLS:
        assert set(selection[cell_name(lam, beta)]) == set(ALGORITHMS)


def test_unknown_subcommand_is_rejected(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["table4"])
    assert "invalid choice: 'table4'" in capsys.readouterr().err


def test_slip_mismatch_example_samples_from_its_own_simulator():
    """examples/table3_slip_mismatch.py plugs a 0.67-slip simulator in through make_oracle:
    the env's trajectories come from it, the follower and J from the 0.56 model."""
    import numpy as np

    from bilevel_bench.experiments.table3 import table3_spec
    from bilevel_envs.envs.four_rooms.problem import FourRoomsShaping
    from bilevel_envs.oracles import sampling_tables
    from examples.table3_slip_mismatch import SIMULATOR_MOVE_PROB, mismatched_leader

    leader = mismatched_leader(table3_spec("hpgd", 0.003, 1.0, 0, 0.5))
    env = leader.env.unwrapped
    env.reset(seed=0)
    env.step(leader.x)
    follower = env.last_step.followers[0]
    oracle, context = follower.oracle, follower.context
    simulator = FourRoomsShaping(lam=0.003, beta=1.0, move_prob=SIMULATOR_MOVE_PROB)
    for problem, same in ((simulator, True), (env.problem, False)):
        cdf = sampling_tables(problem.tabular(leader.x, context))[1]
        assert np.allclose(oracle.next_cdf, cdf) == same
    assert env.problem.move_prob == 0.56
