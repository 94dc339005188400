"""``python -m bilevel_teaching <assignment> <file>``: grade a submission, print the report.

Exit status: 0 once a report is printed (whatever the score); 2 for a usage error (unknown
assignment, missing file, bad option), with the reason on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys

from bilevel_teaching import (
    ASSIGNMENTS,
    DEFAULT_TIMEOUT,
    MAX_TIMEOUT,
    check_timeout,
    grade,
)


def _seconds(text: str) -> float:
    try:
        return check_timeout(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--timeout must be a number of seconds in (0, "
                                         f"{MAX_TIMEOUT:g}]; got {text!r}") from None


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"--seed must be an integer in [0, 2**63); got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bilevel_teaching",
        description="Grade a teaching assignment of bilevel-envs against exact answers.")
    parser.add_argument("assignment", help=f"one of: {', '.join(ASSIGNMENTS)}")
    parser.add_argument("file", help="your solution (.py file)")
    parser.add_argument("--timeout", type=_seconds, default=DEFAULT_TIMEOUT,
                        help=f"seconds each check may take (default {DEFAULT_TIMEOUT:g})")
    parser.add_argument("--seed", type=_seed, default=0,
                        help="seed of the checks' random numbers (default 0)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse printed the usage error (or --help)
        return int(exit_.code or 0)
    try:
        report = grade(args.assignment, args.file, timeout=args.timeout, seed=args.seed)
    except (ValueError, FileNotFoundError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format())
    return 0


if __name__ == "__main__":
    sys.exit(main())
