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


def readme_python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_every_python_block_of_the_readme_runs_as_written(tmp_path, monkeypatch):
    blocks = readme_python_blocks()
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)  # the examples write out/
    monkeypatch.setenv("MHAPRUNE_EXAMPLE_STEPS", "3")  # the documented small budget; the text is not edited
    scope: dict = {"__name__": "__readme__"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"README.md python block {i + 1}", "exec"), scope)  # noqa: S102 - our own README
    assert scope["result"].report.pruned.macs <= scope["result"].report.target_macs
    import torch

    x = scope["calib"][:4]
    with torch.no_grad():
        assert torch.equal(scope["same"](x), scope["pruned"].eval()(x))
    assert (tmp_path / "out" / "model.safetensors").exists()
