"""The README's two fresh-machine commands exist, and CI runs the test command verbatim."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Fresh machine", 1)[1].split("\n## ", 1)[0]
    return [c.strip() for c in re.findall(r"```bash\n(.*?)```", section, flags=re.S)]


def test_exactly_two_commands_and_ci_runs_the_test_command():
    cmds = readme_commands()
    assert len(cmds) == 2
    main_cmd, test_cmd = cmds
    assert "pytest" in test_cmd and "pytest" not in main_cmd
    assert test_cmd in (ROOT / ".ci" / "run").read_text()
