"""`bilevel-bench`: the table3 command end to end on a tiny budget, and every subcommand's
arguments: a bad value is a usage error (exit status 2) naming the flag, before anything runs,
never a traceback."""

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bilevel_bench
from bilevel_bench.cli import build_parser, main
from bilevel_bench.experiments import EXPERIMENTS, get_experiment
from bilevel_bench.experiments.table3.report import load_selection
from bilevel_bench.experiments.table3.spec import ALGORITHMS, TABLE3_CELLS, cell_name

SHIPPED = str(Path(bilevel_bench.__file__).parent / "data" / "table3_selected.json")


def selection(algorithms=ALGORITHMS):
    chosen = {"hpgd": {"learning_rate": 0.5}, "amd": {"learning_rate": 0.5},
              "zero_order": {"learning_rate": 0.5, "perturbation_constant": 0.5}}
    return {cell_name(lam, beta): {a: chosen[a] for a in algorithms}
            for lam, beta in TABLE3_CELLS}


@pytest.fixture
def selection_file(tmp_path):
    path = tmp_path / "selection.json"
    path.write_text(json.dumps({"selection": selection()}))
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
    chosen = load_selection()
    for lam, beta in TABLE3_CELLS:
        assert set(chosen[cell_name(lam, beta)]) == set(ALGORITHMS)


def test_unknown_subcommand_is_rejected(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["table4"])
    assert "invalid choice: 'table4'" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_every_subcommand_documents_its_flags_with_ranges(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([name, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert exit_.value.code == 0
    for flag in ("--seeds", "--quick", "--out", "--workers", "--dry-run"):
        assert flag in text
    if get_experiment(name).algorithms:  # the suite takes --leader instead
        assert "--algorithms" in text
    if name == "suite":
        assert "--leader" in text and "--budget-scale" in text
    else:
        assert "--iterations" in text
        assert "an integer in [1, 1000000]" in text  # --iterations, from its spec field's check


def dry_run(argv, capsys):
    """``main(argv + --dry-run)``: (exit status, stdout, stderr)."""
    try:
        status = main([*argv, "--dry-run"])
    except SystemExit as exc:
        status = exc.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.mark.parametrize("argv, message", [
    (["table3", "--iterations", "0"], "argument --iterations: must be an integer in [1, "),
    (["table3", "--seeds", "0"], "argument --seeds: must be an integer in [1, 1000]; got '0'"),
    (["table3", "--seeds", "-1"], "argument --seeds: must be an integer in [1, 1000]"),
    (["contract", "--seeds", "2.5"], "argument --seeds: must be an integer"),
    (["rlhf", "--eval-every", "-3"], "argument --eval-every: must be an integer in [1, "),
    (["tax", "--iterations", "nan"], "argument --iterations: must be an integer"),
    (["table3", "--workers", "0"], "argument --workers: must be an integer in [1, 1024]"),
    (["table3", "--workers", "two"], "argument --workers: must be an integer in [1, 1024]"),
    (["table3", "--selection", "/no/such/file"], "argument --selection: cannot read"),
    (["table3", "--grid", "--selection", SHIPPED], "argument --selection: not allowed with "
                                                   "argument --grid"),
    (["table3", "--grid-seeds", "3"], "argument --grid-seeds: applies to --grid only"),
    (["table3", "--algorithms", "sgd"], "argument --algorithms: invalid choice: 'sgd'"),
    (["table3", "--algorithms", "hpgd", "hpgd"], "argument --algorithms: 'hpgd' given more"),
    (["tax", "--setups", "tabular,neural"], "argument --setups: invalid choice: "
                                            "'tabular,neural'"),
    (["tax", "--quick", "--paper-budget"], "argument --paper-budget: cannot be combined with "
                                           "--quick"),
    (["contract", "--instances", "moon"], "argument --instances: invalid choice: 'moon'"),
    (["rlhf", "--address", "ray://x:1"], "argument --address: needs --backend ray"),
    (["rlhf", "--backend", "ray", "--workers", "2"], "argument --workers: sets local "),
])
def test_bad_arguments_are_usage_errors_naming_the_flag(argv, message, capsys, tmp_path):
    status, out, err = dry_run([*argv, "--out", str(tmp_path / "out")], capsys)
    assert status == 2 and message in err, err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_unusable_output_folders_are_usage_errors(tmp_path, capsys):
    file = tmp_path / "file"
    file.write_text("")
    for out, message in [(file, "exists and is not a folder"),
                         (file / "below", "is under"),
                         ("", "must be a non-empty string")]:
        status, _, err = dry_run(["contract", "--out", str(out)], capsys)
        assert status == 2 and "argument --out:" in err and message in err, err


def test_a_selection_that_is_malformed_or_lacks_an_algorithm_is_a_usage_error(tmp_path,
                                                                             capsys):
    cases = [("not json", "is not JSON"),
             (json.dumps({"selected": {}}), 'must be a JSON object with a "selection"'),
             (json.dumps({"selection": {"lambda=9,beta=9": {}}}), "unknown cell"),
             (json.dumps({"selection": {cell_name(0.001, 1.0): {"hpgd": {"learning_rate": -1}}}}),
              "learning_rate must be a finite number > 0"),
             (json.dumps({"selection": selection(("hpgd", "zero_order"))}),
              "has no hyperparameters for amd at lambda=0.001, beta=1")]
    for text, message in cases:
        path = tmp_path / "selection.json"
        path.write_text(text)
        status, _, err = dry_run(["table3", "--selection", str(path), "--out",
                                  str(tmp_path / "out")], capsys)
        assert status == 2 and "argument --selection:" in err and message in err, err
    # ... while a selection for the algorithms asked for is enough.
    status, out, _ = dry_run(["table3", "--selection", str(path), "--algorithms", "hpgd",
                              "zero_order", "--out", str(tmp_path / "out")], capsys)
    assert status == 0 and "Table 3: 180 runs" in out


def test_quick_presets_yield_to_explicit_flags_and_write_to_their_own_folder(capsys,
                                                                            monkeypatch,
                                                                            tmp_path):
    monkeypatch.chdir(tmp_path)
    status, out, _ = dry_run(["table3", "--quick", "--seeds", "5"], capsys)
    assert status == 0 and "135 runs (9 cells × 3 algorithms × 5 seeds, 10000 iterations" in out
    assert "in results/table3-quick" in out
    status, out, _ = dry_run(["table3", "--quick", "--iterations", "500"], capsys)
    assert "× 3 seeds, 500 iterations" in out
    status, out, _ = dry_run(["rlhf", "--quick", "--algorithms", "hpgd"], capsys)
    assert "RLHF: 9 runs (3 instances × 1 algorithms × 3 seeds, 500 iterations) in " \
           "results/rlhf-quick" in out
    assert not (tmp_path / "results").exists()  # a dry run writes nothing


# ---------------------------------------------------------------------------- property test
def value_flags(parser):
    """Every subcommand's flags that take values, and its on/off flags."""
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    table = {}
    for name, sub in subparsers.items():
        actions = [a for a in sub._actions if a.option_strings and a.dest != "help"]
        table[name] = ([a.option_strings[0] for a in actions if a.nargs != 0],
                       [a.option_strings[0] for a in actions if a.nargs == 0
                        and a.dest != "dry_run"])
    return table


FLAGS = value_flags(build_parser())
#: values a user might type by mistake, for every flag
NASTY = ["0", "-1", "nan", "inf", "", " ", "1e9", "99999999999999999999", "none", "true", "[1]",
         "{}", "a,b", "/etc/passwd", "/etc/passwd/x", "/no/such/file", "--", "-x", "٣"]
VALUES = st.one_of(
    st.sampled_from(NASTY),
    st.sampled_from(["1", "2", "0.5", "10_000", "hpgd", "tabular", "grid", "local", "ray"]),
    st.integers(-10**12, 10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=12),
)


def check_dry_run(argv, capsys, tmp_path):
    if "--out" not in argv:
        argv = [*argv, "--out", str(tmp_path / "out")]
    status, _, err = dry_run(argv, capsys)
    assert status in (0, 2), (argv, status, err)
    if status == 2:
        assert "error: argument " in err or "error: unrecognized arguments" in err, (argv, err)
    assert "Traceback" not in err
    assert not list(tmp_path.rglob("runs")) and not (tmp_path / "out").exists(), argv
    return status, err


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_every_flag_of_every_subcommand_refuses_mistyped_values(name, capsys, tmp_path,
                                                                 monkeypatch):
    """Each flag that takes a value, given each mistyped value: accepted or a usage error
    naming that flag; numeric flags refuse 0 or -1 (and "nan")."""
    monkeypatch.chdir(tmp_path)
    for flag in FLAGS[name][0]:
        for value in NASTY:
            status, err = check_dry_run([name, flag, value], capsys, tmp_path)
            if status == 2 and value not in ("--", "-x"):
                assert f"argument {flag}" in err, (flag, value, err)
        if flag not in ("--out", "--address"):  # a folder "nan" or a host "nan" may exist
            assert check_dry_run([name, flag, "nan"], capsys, tmp_path)[0] == 2, flag


@st.composite
def command_lines(draw):
    name = draw(st.sampled_from(sorted(EXPERIMENTS)))
    with_values, switches = FLAGS[name]
    argv = [name]
    for flag in draw(st.lists(st.sampled_from(with_values), min_size=1, max_size=3)):
        argv += [flag, *draw(st.lists(VALUES, min_size=1, max_size=2))]
    argv += draw(st.lists(st.sampled_from(switches), max_size=2, unique=True))
    return argv


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(argv=command_lines())
def test_random_arguments_never_reach_a_traceback(argv, capsys, tmp_path, monkeypatch):
    """Random values for random flags (and switches) of every subcommand, as a dry run: either
    accepted (exit 0) or a usage error (exit 2) naming an argument — never another exception,
    nothing written."""
    monkeypatch.chdir(tmp_path)
    check_dry_run(argv, capsys, tmp_path)


def test_slip_mismatch_example_samples_from_its_own_simulator():
    """examples/table3_slip_mismatch.py plugs a 0.67-slip simulator in through make_oracle:
    the env's trajectories come from it, the follower and J from the 0.56 model."""
    import numpy as np

    from bilevel_bench.experiments.table3.spec import Table3Spec
    from bilevel_envs.envs.four_rooms.problem import FourRoomsShaping
    from bilevel_envs.oracles import sampling_tables
    from examples.table3_slip_mismatch import SIMULATOR_MOVE_PROB, mismatched_leader

    leader = mismatched_leader(Table3Spec(algorithm="hpgd", lam=0.003, beta=1.0, seed=0,
                                          learning_rate=0.5))
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
