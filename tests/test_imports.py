"""The package's layering, and that importing it has no side effects."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "titok"

# module prefix -> titok modules it must not import, at module level or inside a function
FORBIDDEN = {
    "titok.layers": ["titok.models", "titok.checkpoints", "titok.train", "titok.cli"],
    "titok.quantizers": ["titok.models", "titok.checkpoints", "titok.train", "titok.cli"],
    "titok.models": ["titok.checkpoints", "titok.reference_layout", "titok.train", "titok.cli", "titok.data"],
    "titok.sampling": ["titok.models", "titok.checkpoints", "titok.train", "titok.cli"],
    "titok.data": ["titok.models", "titok.checkpoints", "titok.train", "titok.cli", "titok.eval"],
    "titok.losses": ["titok.models", "titok.checkpoints", "titok.train", "titok.cli"],
    "titok.metrics": ["titok.models", "titok.checkpoints", "titok.train", "titok.cli", "titok.eval"],
    "titok.eval": ["titok.train", "titok.cli"],
    "titok.checkpoints": ["titok.train", "titok.cli"],
}
# (module, import) pairs allowed despite FORBIDDEN: ``model.preprocess`` reads image files with the one image reader
# (titok.data.images imports no model, so this adds no cycle; the cycle test checks that).
ALLOWED = {("titok.models.base", "titok.data.images")}


def _imports(module: str, path: Path) -> set[str]:
    """Every module that ``path`` imports, at module level, inside functions or under ``TYPE_CHECKING``."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, or from a parent for each extra dot
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            modules = {f"{base}.{alias.name}" for alias in node.names} & set(MODULES)
            names.update(modules or {base})  # `from titok import reference_layout` imports that module
        elif isinstance(node, ast.Constant) and node.value in MODULES and "." in node.value:
            names.add(node.value)  # a module named for importlib (titok's lazy attributes)
    return names


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        yield ".".join(p for p in rel.parts if p != "__init__"), path


MODULES = dict(_modules())


def _graph() -> dict[str, set[str]]:
    """titok module -> the titok modules it imports (a package's ``__init__`` counts only when named itself)."""
    return {m: {i for i in _imports(m, p) if i in MODULES and i != m} for m, p in MODULES.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of ``graph`` (its modules in order, the first repeated at the end), or []."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


def test_no_import_cycle():
    cycle = _cycle(_graph())
    assert not cycle, " -> ".join(cycle)


def test_cycle_finder_sees_lazy_imports(tmp_path):
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []
    lazy = tmp_path / "m.py"
    lazy.write_text("def f():\n    from titok.checkpoints import load\n    from . import io\n")
    assert {"titok.checkpoints", "titok.io"} <= _imports("titok.m", lazy)
    lazy.write_text('_LAZY = {"load": "titok.checkpoints"}\n')
    assert _imports("titok", lazy) == {"titok.checkpoints"}


@pytest.mark.parametrize("module,path", list(MODULES.items()))
def test_layering(module, path):
    banned = [b for prefix, bans in FORBIDDEN.items() if module.startswith(prefix) for b in bans]
    imports = {i for i in _imports(module, path) if (module, i) not in ALLOWED}
    bad = sorted(i for i in imports for b in banned if i == b or i.startswith(b + "."))
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
