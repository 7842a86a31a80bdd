"""The architecture is a checked contract: the import layers of ``.importlinter`` (imports inside functions
included) and no class tests of our attention / MLP modules outside ``models/`` and ``adapters/``."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")


def _lint(src: Path, config: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run(
        [LINT, "--no-cache", str(config)], cwd=src.parent, env=env, capture_output=True, text=True, timeout=300
    )


def _copy_tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    shutil.copytree(
        ROOT / "src" / "mhaprune", src / "mhaprune", ignore=shutil.ignore_patterns("weights", "__pycache__")
    )
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    return src


def test_import_contract_holds(tmp_path):
    src = _copy_tree(tmp_path)
    r = _lint(src, tmp_path / ".importlinter")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout


@pytest.mark.parametrize(
    "module, line, broken",
    [
        # models -> pruning -> models: the cycle bundled weights once made through export
        ("models/_registry.py", "    from ..export import load_model  # noqa: F401\n", "Layers"),
        # interop <-> export
        ("interop/__init__.py", "    from ..export.folder import save_model  # noqa: F401\n", "Layers"),
        # the engine must not know pruning
        ("train/engine.py", "    from ..pruning import Pruner  # noqa: F401\n", "knows nothing of pruning"),
    ],
)
def test_import_contract_fails_on_a_cycle_inside_a_function(tmp_path, module, line, broken):
    src = _copy_tree(tmp_path)
    path = src / "mhaprune" / module
    path.write_text(path.read_text() + "\n\ndef _added_for_the_test():\n" + line)
    r = _lint(src, tmp_path / ".importlinter")
    assert r.returncode != 0
    assert "1 broken" in r.stdout and broken in r.stdout.split("Broken contracts")[1], r.stdout


_OURS = {
    "Attention",
    "WindowAttention",
    "FocusedLinearAttention",
    "PvtAttention",
    "PvtFocusedLinearAttention",
    "Mlp",
    "TimmAttention",
    "HFAttention",
    "HFWindowAttention",
    "HFBertAttention",
}


def _class_tests(path: Path) -> list[str]:
    hits = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("isinstance", "issubclass"):
            names = {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)} if len(node.args) > 1 else set()
            if names & _OURS:
                hits.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return hits


def test_module_knowledge_lives_in_the_adapters():
    allowed = (ROOT / "src/mhaprune/models", ROOT / "src/mhaprune/adapters")
    files = [
        p
        for d in ("src", "benchmarks", "tests", "scripts")
        for p in (ROOT / d).rglob("*.py")
        if not any(a in p.parents for a in allowed)
    ]
    hits = [h for p in files for h in _class_tests(p)]
    assert not hits, f"class tests of our attention / MLP modules outside models/ and adapters/: {hits}"
