"""``bilevel-bench``: reproduce the paper's experiments from the command line.

    bilevel-bench table3 --quick          # a few minutes on 2 cores (results/table3-quick)
    bilevel-bench table3 --seeds 10       # the full Table 3 at the selected learning rates
    bilevel-bench table3 --grid           # search the paper's grid first
    bilevel-bench tax --quick             # tax design, tabular and soft-DQN households
    bilevel-bench tax                     # Fig. 3a/3b: 3 seeds, ≤ 1 hour with soft DQN

Every subcommand is built from its experiment's declaration
(:class:`bilevel_bench.experiment.Experiment`): the flags of its spec fields, ``--seeds``,
``--algorithms`` (space-separated, like every list), ``--quick``, and the runner's options.
Every value is checked when it is parsed or before anything runs: a bad one is a usage error
(exit status 2) naming the flag and the allowed range.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from bilevel_bench.arguments import add_list_argument, argument_type
from bilevel_bench.checks import Integer, Text
from bilevel_bench.experiment import Experiment, UsageError, execute
from bilevel_bench.experiments import EXPERIMENTS, get_experiment

MAX_SEEDS = 1000
MAX_WORKERS = 1024


def add_experiment(subparsers, experiment: Experiment) -> argparse.ArgumentParser:
    """The subcommand of ``experiment``: its options, its spec fields' flags, the shared ones."""
    p = subparsers.add_parser(experiment.name, help=experiment.help,
                              description=experiment.description, allow_abbrev=False)
    p.add_argument("--seeds", type=argument_type(Integer(1, MAX_SEEDS)), default=None,
                   metavar="N", help=f"seeds per configuration, 0..N-1 (default "
                                     f"{experiment.seeds}; {experiment.quick.seeds} with "
                                     f"--quick); an integer in [1, {MAX_SEEDS}]")
    if experiment.algorithms:  # an experiment of open-ended leaders declares its own flag
        add_list_argument(p, "--algorithms", experiment.algorithms, "leader algorithms")
    p.add_argument("--quick", action="store_true",
                   help=f"{experiment.quick.help}; results in "
                        f"{experiment.default_out(True)}. Flags given explicitly win.")
    for field in experiment.spec_class.flag_fields():
        check = field.metadata["check"]
        default = _default_text(experiment.spec_class.field_default(field.name),
                                experiment.quick.fields.get(field.name))
        p.add_argument(experiment.flag_of(field.name), dest=field.name,
                       type=argument_type(check), default=None, metavar=check.metavar,
                       help=f"{field.metadata['help']}: {check.describe()}{default}")
    if experiment.options is not None:
        experiment.options(p)
    add_runner_arguments(p, experiment)
    p.set_defaults(experiment=experiment.name, parser=p)
    return p


def _default_text(default, quick) -> str:
    """`` (default 10,000; 3,000 with --quick)`` for a flag's help."""
    def text(value):
        return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else \
            f"{value}"

    parts = [] if default is None or default is dataclasses.MISSING else [text(default)]
    if quick is not None:
        parts.append(f"{text(quick)} with --quick")
    return f" (default {'; '.join(parts)})" if parts else ""


def add_runner_arguments(parser: argparse.ArgumentParser, experiment: Experiment) -> None:
    """``--out``, ``--backend``, ``--address``, ``--workers``, ``--no-plots``, ``--dry-run``."""
    parser.add_argument("--out", type=argument_type(Text()), default=None, metavar="DIR",
                        help=f"results folder (default {experiment.default_out(False)}, "
                             f"{experiment.default_out(True)} with --quick); runs already in "
                             f"it are not rerun")
    parser.add_argument("--backend", choices=("local", "ray"), default="local",
                        help="local processes (default) or a Ray cluster")
    parser.add_argument("--address", type=argument_type(Text()), default=None,
                        help="Ray cluster address (with --backend ray; default: a local Ray)")
    parser.add_argument("--workers", type=argument_type(Integer(1, MAX_WORKERS)),
                        default=None, metavar="N",
                        help=f"local processes (default: one per core; 1 runs in this "
                             f"process); an integer in [1, {MAX_WORKERS}]")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    parser.add_argument("--dry-run", action="store_true",
                        help="check the arguments and print what would run; run nothing")


def build_parser() -> argparse.ArgumentParser:
    """The ``bilevel-bench`` parser: one subcommand per registered experiment."""
    parser = argparse.ArgumentParser(
        prog="bilevel-bench", allow_abbrev=False,
        description="Reproduce the experiments of Thoma et al. (2024) and the library's "
                    "benchmarks.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="EXPERIMENT")
    for name in EXPERIMENTS:
        add_experiment(subparsers, get_experiment(name))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``bilevel-bench`` with ``argv`` (default: the process's arguments); returns the exit
    status (a usage error exits with status 2 through argparse)."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # parallelism is across runs
    args = build_parser().parse_args(argv)
    try:
        return execute(get_experiment(args.experiment), args)
    except UsageError as exc:
        args.parser.error(str(exc))
    except KeyboardInterrupt:
        print("\ninterrupted: finished runs are kept; rerun the same command to resume",
              file=sys.stderr)
        return 130
    return 1  # not reached: parser.error exits


if __name__ == "__main__":
    sys.exit(main())
