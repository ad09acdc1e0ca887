"""The package's layering, and that importing it has no side effects."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "titok"

# module prefix -> titok modules it must not import at module level
FORBIDDEN = {
    "titok.layers": ["titok.models", "titok.checkpoints", "titok.train", "titok.cli"],
    "titok.quantizers": ["titok.models", "titok.checkpoints", "titok.train", "titok.cli"],
    "titok.models": ["titok.checkpoints", "titok.reference", "titok.train", "titok.cli", "titok.data"],
    "titok.sampling": ["titok.models", "titok.checkpoints", "titok.train", "titok.cli"],
    "titok.data": ["titok.models", "titok.checkpoints", "titok.train", "titok.cli", "titok.eval"],
    "titok.losses": ["titok.models", "titok.checkpoints", "titok.train", "titok.cli"],
    "titok.metrics": ["titok.models", "titok.checkpoints", "titok.train", "titok.cli", "titok.eval"],
    "titok.eval": ["titok.train", "titok.cli"],
    "titok.checkpoints": ["titok.train", "titok.cli"],
}


def _module_level_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.parse(path.read_text()).body:  # top level only: imports inside functions are lazy
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        yield ".".join(p for p in rel.parts if p != "__init__"), path


@pytest.mark.parametrize("module,path", list(_modules()))
def test_layering(module, path):
    banned = [b for prefix, bans in FORBIDDEN.items() if module.startswith(prefix) for b in bans]
    bad = sorted(i for i in _module_level_imports(path) for b in banned if i == b or i.startswith(b + "."))
    assert not bad, f"{module} imports {bad}"


def test_import_is_silent_and_sets_no_global_state():
    code = (
        "import logging, torch; before = (torch.get_default_dtype(), torch.get_num_threads(), "
        "len(logging.getLogger().handlers), torch.backends.cuda.matmul.allow_tf32); import titok, titok.cli; "
        "after = (torch.get_default_dtype(), torch.get_num_threads(), len(logging.getLogger().handlers), "
        "torch.backends.cuda.matmul.allow_tf32); assert before == after, (before, after)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "" and out.stderr == ""
