"""Mutation score of the numerical core (mutmut), not part of CI.

Mutates the exact layer (``bilevel_envs/tabular.py``, ``hypergradient.py``, ``exact.py``), the
samplers (``oracles.py``, ``rollouts.py``), the estimators (``leaders/estimators.py``) and the
leaders' update rule (``leaders/optim.py`` and the step of the loop, ``Leader._iterate``), then
runs, for each mutant, the tests that call the mutated function (mutmut's per-function mapping),
fastest first, from the test files listed under ``[tool.mutmut]`` in ``pyproject.toml``.

The run happens in a copy of the repository (``--workdir``; mutmut writes ``mutants/`` there),
so the checkout stays clean. It takes hours on two cores: run it in the background, e.g.::

    python benchmarks/mutation_score.py --workdir /tmp/mutation --max-children 2 \\
        --out results/mutation.json

A full run takes hours; ``--sample N --seed S`` runs a seeded uniform sample of N of the selected
mutants instead (the population is the mutants mutmut generates from the checkout, so the same
source, N and S give the same sample), e.g.::

    nice -n 15 python benchmarks/mutation_score.py --workdir /tmp/mutation-sample \\
        --max-children 1 --sample 100 --seed 15 --out results/mutation_sample.json

The sample is written to ``<workdir>/sample.json``; the report then covers only the sample and
gives the score killed / (killed + survived + timeout) with its 95 % Wilson interval. A sampled
run reuses the generated mutants and test statistics of an existing ``--workdir`` (new tests
copied into its ``tests/`` are picked up); ``--exclude <earlier sample.json>`` draws a second
sample disjoint from the first.

A second call with the same ``--workdir`` and ``--report-only`` prints the table of a finished
(or interrupted) run (of the sample in ``--sample-file``, default ``<workdir>/sample.json``, if
there is one). ``mutmut show <name>`` in the work directory shows a mutant's diff.
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

import numpy as np
from scipy.stats import binomtest

ROOT = Path(__file__).resolve().parent.parent
#: the mutants that are run (mutmut name patterns): whole modules, and of ``leaders/base.py``
#: only the step of the loop (the rest is logging and checkpoints)
MUTANTS = ("bilevel_envs.tabular.*", "bilevel_envs.hypergradient.*", "bilevel_envs.exact.*",
           "bilevel_envs.oracles.*", "bilevel_envs.rollouts.*", "leaders.estimators.*",
           "leaders.optim.*",
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


def generate(workdir: Path, env: dict[str, str]) -> None:
    """Let mutmut write the mutants and collect its test statistics, running no mutant.

    ``mutmut run`` with a pattern that matches no mutant does both steps and then stops on
    "nothing matches"; its meta files then list every mutant (status "not run").
    """
    subprocess.run(["mutmut", "run", "--max-children", "1", "__no_such_mutant__"],
                   cwd=workdir, env=env, check=False, capture_output=True)
    if not results(workdir):
        sys.exit(f"mutmut generated no selected mutants in {workdir}")


def draw_sample(names: list[str], size: int, seed: int) -> list[str]:
    """``size`` names drawn uniformly without replacement, reproducibly from ``seed``."""
    if not 1 <= size <= len(names):
        raise ValueError(f"sample must be in [1, {len(names)}] (the selected mutants), "
                         f"got {size}")
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(sorted(names), size=size, replace=False).tolist())


def score_interval(killed: int, tried: int) -> tuple[float, float, float]:
    """The score killed / tried and its 95 % Wilson interval (nan if nothing was tried)."""
    if tried == 0:
        return float("nan"), float("nan"), float("nan")
    ci = binomtest(killed, tried).proportion_ci(confidence_level=0.95, method="wilson")
    return killed / tried, float(ci.low), float(ci.high)


def report(statuses: dict[str, str]) -> dict:
    """Counts per module and in total, the score and the surviving mutants."""
    per_module: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for name, status in statuses.items():
        per_module[name.split(".x")[0]][status] += 1
    total = collections.Counter()
    for counts in per_module.values():
        total.update(counts)
    print(f"{'module':28s} {'killed':>7s} {'survived':>9s} {'timeout':>8s} {'no tests':>9s} "
          f"{'other':>6s}  score [95 % Wilson]")
    rows = {}
    for module, counts in [*sorted(per_module.items()), ("total", total)]:
        tried = counts["killed"] + counts["survived"] + counts["timeout"]
        other = sum(counts.values()) - tried - counts["no tests"]
        score, low, high = score_interval(counts["killed"], tried)
        rows[module] = {**counts, "score": score, "ci95": [low, high]}
        print(f"{module:28s} {counts['killed']:7d} {counts['survived']:9d} "
              f"{counts['timeout']:8d} {counts['no tests']:9d} {other:6d}  "
              f"{score:.3f} [{low:.3f}, {high:.3f}]")
    print("score = killed / (killed + survived + timeout); 'other' = not run, skipped, ...")
    survivors = sorted(n for n, s in statuses.items() if s in ("survived", "no tests"))
    timeouts = sorted(n for n, s in statuses.items() if s == "timeout")
    return {"counts": dict(total), "per_module": rows, "score": rows["total"]["score"],
            "ci95": rows["total"]["ci95"], "survivors": survivors, "timeouts": timeouts}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, required=True,
                        help="a directory for the copy of the repository and mutmut's files")
    parser.add_argument("--max-children", type=int, default=2, help="parallel mutants")
    parser.add_argument("--out", type=Path, help="write counts and survivors as JSON here")
    parser.add_argument("--report-only", action="store_true",
                        help="only print the results of a run in --workdir")
    parser.add_argument("--sample", type=int,
                        help="run only this many mutants, drawn uniformly from the selected ones")
    parser.add_argument("--seed", type=int, default=0, help="seed of --sample")
    parser.add_argument("--exclude", type=Path,
                        help="draw --sample from the mutants not in this earlier sample.json "
                             "(with it, the two samples are one uniform sample of their sum)")
    parser.add_argument("--sample-file", type=Path,
                        help="where the sample is written / read (default <workdir>/sample.json)")
    args = parser.parse_args(argv)
    workdir = args.workdir.resolve()
    sample_file = args.sample_file or workdir / "sample.json"
    env = {**os.environ, "PYTHONPATH": str(workdir)}
    if args.report_only:
        pass
    elif args.sample is not None:
        if not (workdir / "mutants").exists():
            copy_repository(workdir)
            generate(workdir, env)
        population = list(results(workdir))
        excluded = set() if args.exclude is None else set(
            json.loads(args.exclude.read_text())["mutants"])
        sample = draw_sample([n for n in population if n not in excluded], args.sample,
                             args.seed)
        sample_file.write_text(json.dumps({"size": args.sample, "seed": args.seed,
                                           "population": len(population),
                                           "excluded": len(excluded),
                                           "mutants": sample}, indent=1))
    else:
        if (workdir / "mutants").exists():
            sys.exit(f"{workdir}/mutants exists: use --report-only, or remove it to rerun")
        copy_repository(workdir)
    if not args.report_only:
        names = json.loads(sample_file.read_text())["mutants"] if args.sample else MUTANTS
        start, cpu = time.time(), os.times()
        subprocess.run(["mutmut", "run", "--max-children", str(args.max_children), *names],
                       cwd=workdir, env=env, check=False)
        used = os.times()
        children = (used.children_user + used.children_system
                    - cpu.children_user - cpu.children_system)
        print(f"wall {time.time() - start:.0f} s, CPU of mutmut and its workers {children:.0f} s")
    statuses = results(workdir)
    if sample_file.exists():
        drawn = json.loads(sample_file.read_text())
        print(f"sample of {drawn['size']} of {drawn['population']} mutants, seed {drawn['seed']}"
              + (f", excluding {drawn['excluded']} of an earlier sample"
                 if drawn.get("excluded") else ""))
        statuses = {name: statuses.get(name, "not run") for name in drawn["mutants"]}
    summary = report(statuses)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
