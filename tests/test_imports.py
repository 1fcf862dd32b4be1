"""The package's import structure: every module imports in a fresh interpreter, module-level imports form no cycle,
and ``import r2m_hf`` / ``r2m-hf --help`` load neither torch nor transformers."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import r2m_hf

PACKAGE_DIR = Path(r2m_hf.__file__).parent


def package_modules(root: Path = PACKAGE_DIR, package: str = "r2m_hf") -> dict[str, Path]:
    """Every importable module under `root` (folders without ``__init__.py`` are not packages), by dotted name."""
    modules = {package: root / "__init__.py"}
    for path in sorted(root.iterdir()):
        if path.is_dir() and (path / "__init__.py").is_file():
            modules.update(package_modules(path, f"{package}.{path.name}"))
        elif path.suffix == ".py" and path.name != "__init__.py":
            modules[f"{package}.{path.stem}"] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level_statements(body: list[ast.stmt]):
    """The statements run when the module is imported: the top level and the blocks of top-level ``if``/``try``
    (``if TYPE_CHECKING:`` blocks are not run); function and class bodies are not."""
    for node in body:
        yield node
        if isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _module_level_statements(node.body)
            yield from _module_level_statements(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                yield from _module_level_statements(block)


def module_level_imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules `name` imports at module level (``from pkg import submodule`` counts as the submodule)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in _module_level_statements(ast.parse(path.read_text(encoding="utf-8")).body):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = name.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import r2m_hf.x.y` loads r2m_hf.x.y; an attribute: its module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    return {name: module_level_imports(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            child = next(stack[-1], None)
            if child is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(child) == 1:
                return path[path.index(child) :] + [child]
            elif not state.get(child):
                state[child] = 1
                path.append(child)
                stack.append(iter(sorted(graph.get(child, ()))))
    return None


def test_the_walk_sees_relative_absolute_and_submodule_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "from . import a\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\n",
        "a.py": "import pkg.sub.c\nfrom .b import thing\n\ndef f():\n    from . import d\n",
        "b.py": "try:\n    from pkg import sub\nexcept ImportError:\n    pass\n",
        "d.py": "",
        "sub/__init__.py": "from .. import d\n",
        "sub/c.py": "from ..a import f\n",
    }
    for rel, text in files.items():
        (pkg / rel).write_text(text)
    modules = package_modules(pkg, "pkg")
    graph = {name: module_level_imports(name, path, modules) for name, path in modules.items()}
    assert graph == {
        "pkg": {"pkg.a"},
        "pkg.a": {"pkg.sub.c", "pkg.b"},
        "pkg.b": {"pkg.sub"},
        "pkg.d": set(),
        "pkg.sub": {"pkg.d"},
        "pkg.sub.c": {"pkg.a"},
    }
    assert find_cycle(graph) == ["pkg.a", "pkg.sub.c", "pkg.a"]
    del graph["pkg.sub.c"]
    assert find_cycle(graph) is None


def test_module_level_imports_form_no_cycle():
    graph = import_graph()
    assert "r2m_hf.cli" in graph and "r2m_hf.methods.registry" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_package_imports_no_submodule_at_load_time():
    """``__init__`` loads only the version and the errors; the API loads on first use."""
    assert import_graph()["r2m_hf"] == {"r2m_hf._version", "r2m_hf.errors"}


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300, check=False
    )


def test_every_module_imports_in_a_fresh_interpreter():
    names = [n for n in package_modules() if not n.endswith(".__main__") or n == "r2m_hf.bench.__main__"]
    proc = _run(
        f"""
        import importlib
        failed = []
        for name in {names!r}:
            try:
                importlib.import_module(name)
            except Exception as exc:
                failed.append(f"{{name}}: {{type(exc).__name__}}: {{exc}}")
        print("\\n".join(failed))
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


@pytest.mark.parametrize(
    "code",
    [
        "import r2m_hf; r2m_hf.ConfigError; r2m_hf.__version__",
        "from r2m_hf.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass",
        "from r2m_hf.cli import main\ntry:\n    main(['merge', '--help'])\nexcept SystemExit:\n    pass",
        "from r2m_hf.cli import main\ntry:\n    main(['check-specialist', '--help'])\nexcept SystemExit:\n    pass",
        "from r2m_hf.cli import main\nassert main(['methods']) == 0 and main(['methods', '--markdown']) == 0",
        "from r2m_hf.methods.registry import get_method\n"
        "get_method('r2m').sensitivity_sweeps()\nget_method('r2m').rule()",
    ],
    ids=["import", "help", "merge-help", "check-specialist-help", "methods", "method-metadata"],
)
def test_the_package_and_the_cli_parser_do_not_import_torch(code):
    """Verbs that only parse or list (``--help``, ``methods``) start at once: torch's import alone takes seconds.
    Method modules import torch inside the functions that compute (annotations name it under TYPE_CHECKING)."""
    proc = _run(code + "\nimport sys\nprint(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_public_names_load_on_first_use_and_merge_stays_the_function():
    proc = _run(
        """
        import r2m_hf
        from r2m_hf.merge import plan_merge  # the submodule r2m_hf.merge must not replace the function
        assert callable(r2m_hf.merge) and r2m_hf.merge.__module__.startswith("r2m_hf."), r2m_hf.merge
        from r2m_hf import merge
        assert merge is r2m_hf.merge
        for name in r2m_hf.__all__:
            assert getattr(r2m_hf, name) is not None, name
        assert r2m_hf.config.load_config is r2m_hf.load_config
        try:
            r2m_hf.no_such_name
        except AttributeError as exc:
            assert "no_such_name" in str(exc)
        else:
            raise AssertionError("no AttributeError")
        print("ok")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
