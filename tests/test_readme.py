"""README.md's two commands and the CI script stay in sync."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Two commands", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.strip().splitlines() if line.strip()]


def test_readme_has_exactly_two_commands_installing_cpu_torch_first():
    install, test = readme_commands()
    assert install.startswith("pip install torch==2.13.0 && ")
    assert "pytest" in test


def test_ci_runs_the_readme_test_command_after_the_readme_install():
    install, test = readme_commands()
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test in ci_lines
    for part in install.split(" && ")[:2]:  # the two install steps, torch first
        assert part in ci_lines
    assert ci_lines.index("pip install torch==2.13.0") < ci_lines.index(test)
