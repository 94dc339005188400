"""Command-line argument helpers shared by every ``bilevel-bench`` subcommand: argparse
types that range-check with a :mod:`bilevel_bench.checks` check, and the one list syntax
(space-separated, ``--flag a b``)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

from bilevel_bench.checks import Check


def argument_type(check: Check) -> Callable[[str], Any]:
    """An argparse ``type=`` that parses and range-checks a value with ``check`` (a bad value
    is a usage error naming the flag and the allowed range)."""
    def parse(text: str) -> Any:
        try:
            return check.parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = type(check).__name__.lower()
    return parse


class UniqueChoices(argparse.Action):
    """A space-separated list of choices (``nargs="+"``) in which no value repeats."""

    def __call__(self, parser, namespace, values, option_string=None):
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise argparse.ArgumentError(self, f"{', '.join(map(repr, repeated))} given more "
                                               f"than once")
        setattr(namespace, self.dest, list(values))


def add_list_argument(parser: argparse.ArgumentParser, flag: str, choices: Sequence[str],
                      help: str, default: str = "all") -> None:
    """A space-separated list flag (``--flag a b``) of distinct ``choices``; unset, it is
    ``None`` (``default`` describes what the command then uses)."""
    parser.add_argument(flag, nargs="+", choices=list(choices), action=UniqueChoices,
                        default=None, metavar="NAME",
                        help=f"{help}, space-separated, from {', '.join(choices)} "
                             f"(default: {default})")
