"""``python -m bilevel_teaching <assignment> <file>``: grade a submission, print the report.

Exit status: 0 once a report is printed (whatever the score); 2 for a usage error (unknown
assignment, missing file, bad option), with the reason on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys

from bilevel_teaching import ASSIGNMENTS, DEFAULT_TIMEOUT, grade


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bilevel_teaching",
        description="Grade a teaching assignment of bilevel-envs against exact answers.")
    parser.add_argument("assignment", help=f"one of: {', '.join(ASSIGNMENTS)}")
    parser.add_argument("file", help="your solution (.py file)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help=f"seconds each check may take (default {DEFAULT_TIMEOUT:g})")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the checks' random numbers (default 0)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    try:
        report = grade(args.assignment, args.file, timeout=args.timeout, seed=args.seed)
    except (ValueError, FileNotFoundError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format())
    return 0


if __name__ == "__main__":
    sys.exit(main())
