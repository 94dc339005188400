"""Mutation score of the numerical core (mutmut), not part of CI.

Mutates the exact layer (``bilevel_envs/tabular.py``, ``exact.py``), the samplers
(``oracles.py``, ``rollouts.py``), the estimators (``leaders/estimators.py``) and the leaders'
update rule (``leaders/optim.py`` and the step of the loop, ``Leader._iterate``), then runs, for
each mutant, the tests that call the mutated function (mutmut's per-function mapping), fastest
first, from the test files listed under ``[tool.mutmut]`` in ``pyproject.toml``.

The run happens in a copy of the repository (``--workdir``; mutmut writes ``mutants/`` there),
so the checkout stays clean. It takes hours on two cores: run it in the background, e.g.::

    python benchmarks/mutation_score.py --workdir /tmp/mutation --max-children 2 \\
        --out results/mutation.json

A second call with the same ``--workdir`` and ``--report-only`` prints the table of a finished
(or interrupted) run. ``mutmut show <name>`` in the work directory shows a mutant's diff.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: the mutants that are run (mutmut name patterns): whole modules, and of ``leaders/base.py``
#: only the step of the loop (the rest is logging and checkpoints)
MUTANTS = ("bilevel_envs.tabular.*", "bilevel_envs.exact.*", "bilevel_envs.oracles.*",
           "bilevel_envs.rollouts.*", "leaders.estimators.*", "leaders.optim.*",
           "leaders.base.xǁLeaderǁ_iterate__mutmut_*")
#: mutmut's exit codes (``mutmut.stats.status_by_exit_code``)
STATUS = {0: "survived", 1: "killed", 3: "killed", 5: "no tests", 33: "no tests",
          34: "skipped", 36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout",
          255: "timeout", 37: "type check", -9: "segfault", -11: "segfault", None: "not run"}


def copy_repository(workdir: Path) -> None:
    """The tracked files of the checkout (working-tree versions) into ``workdir``."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            target = workdir / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def selected(name: str) -> bool:
    from fnmatch import fnmatch

    return any(fnmatch(name, pattern) for pattern in MUTANTS)


def results(workdir: Path) -> dict[str, str]:
    """mutant name -> status, for the selected mutants of a run in ``workdir``."""
    out = {}
    for meta in sorted((workdir / "mutants").rglob("*.meta")):
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            if selected(name):
                out[name] = STATUS.get(code, "suspicious")
    return out


def report(statuses: dict[str, str]) -> dict:
    """Counts per module and in total, the score and the surviving mutants."""
    per_module: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for name, status in statuses.items():
        per_module[name.split(".x")[0]][status] += 1
    total = collections.Counter()
    for counts in per_module.values():
        total.update(counts)
    tried = total["killed"] + total["survived"] + total["timeout"]
    print(f"{'module':28s} {'killed':>7s} {'survived':>9s} {'timeout':>8s} {'no tests':>9s}")
    for module, counts in sorted(per_module.items()):
        print(f"{module:28s} {counts['killed']:7d} {counts['survived']:9d} "
              f"{counts['timeout']:8d} {counts['no tests']:9d}")
    score = (total["killed"] + total["timeout"]) / max(tried, 1)
    print(f"{'total':28s} {total['killed']:7d} {total['survived']:9d} {total['timeout']:8d} "
          f"{total['no tests']:9d}   score (killed + timeout) / tried = {score:.3f}")
    survivors = sorted(n for n, s in statuses.items() if s in ("survived", "no tests"))
    return {"counts": dict(total), "per_module": {m: dict(c) for m, c in per_module.items()},
            "score": score, "survivors": survivors}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, required=True,
                        help="a directory for the copy of the repository and mutmut's files")
    parser.add_argument("--max-children", type=int, default=2, help="parallel mutants")
    parser.add_argument("--out", type=Path, help="write counts and survivors as JSON here")
    parser.add_argument("--report-only", action="store_true",
                        help="only print the results of a run in --workdir")
    args = parser.parse_args(argv)
    workdir = args.workdir.resolve()
    if not args.report_only:
        if (workdir / "mutants").exists():
            sys.exit(f"{workdir}/mutants exists: use --report-only, or remove it to rerun")
        copy_repository(workdir)
        env = {**os.environ, "PYTHONPATH": str(workdir)}
        start, cpu = time.time(), os.times()
        subprocess.run(["mutmut", "run", "--max-children", str(args.max_children), *MUTANTS],
                       cwd=workdir, env=env, check=False)
        used = os.times()
        children = (used.children_user + used.children_system
                    - cpu.children_user - cpu.children_system)
        print(f"wall {time.time() - start:.0f} s, CPU of mutmut and its workers {children:.0f} s")
    summary = report(results(workdir))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
