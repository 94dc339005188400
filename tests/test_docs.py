"""Documentation is executable and complete: snippets run, every env documents itself."""

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import bilevel_envs

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
        *sorted((ROOT / "examples").rglob("README.md"))]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), re.S)


#: pages whose code blocks are one script (run together by their own test below)
SCRIPTS = {ROOT / "docs" / "add_your_environment.md"}
SNIPPETS = [(path, i, code) for path in DOCS if path not in SCRIPTS
            for i, code in enumerate(python_blocks(path))]


def user_code_lines(code: str) -> int:
    """Lines of code, blank and comment lines not counted."""
    return sum(1 for line in code.splitlines()
               if line.strip() and not line.strip().startswith("#"))


@pytest.mark.parametrize("path, index, code", SNIPPETS,
                         ids=[f"{p.relative_to(ROOT)}#{i}" for p, i, _ in SNIPPETS])
def test_documentation_snippets_run(path, index, code, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # snippets that write files write here
    exec(compile(code, f"{path.name}[{index}]", "exec"), {"__name__": "__doc_snippet__"})


REQUIRED_SECTIONS = ("Description", "Contexts", "Observation Space", "Rewards", "Episode End",
                     "Information", "Arguments", "References", "Version History")


@pytest.mark.parametrize("env_id", sorted(bilevel_envs.ENV_IDS))
def test_every_env_docstring_is_a_complete_page(env_id):
    module, name = bilevel_envs.ENV_IDS[env_id][0].split(":")
    doc = getattr(importlib.import_module(module), name).__doc__ or ""
    sections = re.findall(r"^\s*## (.+)$", doc, re.M)
    for required in REQUIRED_SECTIONS:
        assert any(s.startswith(required) for s in sections), f"{env_id}: no '{required}'"
    assert any(" x" in s for s in sections), f"{env_id}: no section on the leader's x"
    assert any("Action Space" in s for s in sections), f"{env_id}: no action space"
    assert f'gym.make("{env_id}"' in doc, f"{env_id}: Arguments lack a gym.make line"


def test_environment_page_lists_every_id_with_a_gym_make_line():
    page = (ROOT / "docs" / "environments.md").read_text()
    for env_id in bilevel_envs.ENV_IDS:
        assert f"`{env_id}`" in page and f'gym.make("{env_id}"' in page, env_id


def test_quickstart_script_is_the_readme_quickstart_and_prints_what_the_readme_shows():
    section = (ROOT / "README.md").read_text().split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    shown = re.search(r"It prints\n\n```\n(.*?)```", section, re.S).group(1)
    script = ROOT / "examples" / "quickstart.py"
    assert code in script.read_text()
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         check=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout == shown


def test_add_your_environment_runs_outside_the_repository_and_prints_what_it_shows(tmp_path):
    """The page's blocks are one user script: run in a fresh interpreter from a directory
    outside the repository (the problem is defined, registered and checked there), it prints
    the page's ```text blocks; the page states its number of lines of user code."""
    page = ROOT / "docs" / "add_your_environment.md"
    text = page.read_text()
    code = "\n".join(python_blocks(page))
    assert f"one script, {user_code_lines(code)} lines of user code" in text
    script = tmp_path / "my_bonus_design.py"
    script.write_text(code)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=600, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout == "".join(re.findall(r"```text\n(.*?)```", text, re.S))
