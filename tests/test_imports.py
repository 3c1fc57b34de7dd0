"""The import structure: the service never loads the evaluation package, and has no cycles.

`aggregator_eval` fits and scores the clusterer's model files; the running service
only loads those files, so no module of `aggregator` may import it, except the
`aggregator eval` command when it runs. And the modules of `aggregator` import
one another in one direction: a cycle makes the import order decide which names
exist, and splits one concern across two files.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "aggregator"
# Modules that do something when imported: the command line itself, and the
# environment alembic runs migrations in.
RUN_ON_IMPORT = {"aggregator.__main__", "aggregator.store.migrations.env"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def runtime_modules() -> list[str]:
    return sorted(
        name
        for name in (module_name(p) for p in PACKAGE.rglob("*.py"))
        if name not in RUN_ON_IMPORT
    )


def run_python(code: str, *args: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


IMPORT_EACH = """
import importlib, json, sys
loaded_by = None
for name in sys.argv[1:]:
    importlib.import_module(name)
    if loaded_by is None and any(m.split(".")[0] == "aggregator_eval" for m in sys.modules):
        loaded_by = name
print(json.dumps({"imported": len(sys.argv) - 1, "loaded_by": loaded_by}))
"""


def test_no_runtime_module_loads_the_evaluation_package() -> None:
    modules = runtime_modules()
    assert "aggregator.cli" in modules and "aggregator.cluster.background" in modules
    result = run_python(IMPORT_EACH, *modules)
    assert result == {"imported": len(modules), "loaded_by": None}


EVAL_COMMAND = """
import io, json, sys
from contextlib import redirect_stdout
from aggregator.cli import main
before = "aggregator_eval" in sys.modules
with redirect_stdout(io.StringIO()) as out:
    code = main(["eval", "--method", "tfidf", sys.argv[1]])
print(json.dumps({"before": before, "after": "aggregator_eval" in sys.modules,
                  "code": code, "docs": json.loads(out.getvalue())["docs"]}))
"""


def test_the_eval_command_loads_the_evaluation_package_only_when_it_runs(
    tmp_path: Path,
) -> None:
    rows = [
        {
            "id": str(i),
            "title": title,
            "text": "",
            "url": f"https://example.com/{i}",
            "published": f"2024-08-06T0{i}:00:00Z",
            "source": "Example",
            "host": "example.com",
            "lang": "en",
            "cluster": cluster,
        }
        for i, (title, cluster) in enumerate(
            [
                ("Troops cross into Kursk region", "kursk"),
                ("Central bank holds its key rate", "rate"),
                ("Kursk region declares an emergency", "kursk"),
            ]
        )
    ]
    labelled = tmp_path / "labelled.jsonl"
    labelled.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    result = run_python(EVAL_COMMAND, str(labelled))
    assert result == {"before": False, "after": True, "code": 0, "docs": 3}


# -- cycles ----------------------------------------------------------------------------


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def module_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Imports run when the module is imported: not those in functions or TYPE_CHECKING."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                continue
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import | ast.ImportFrom):
                found.append(child)
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the aggregator modules its module-level imports name."""
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in module_level_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
                continue
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                # `from a import b` imports the module a.b when there is one, else a
                submodule = f"{base}.{alias.name}"
                targets.add(submodule if submodule in paths else base)
        graph[name] = {t for t in targets if t in paths and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path that returns to its start, or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_import_graph_is_read_from_the_modules() -> None:
    graph = import_graph()
    assert "aggregator.cluster.background" in graph["aggregator.cluster.features"]
    assert "aggregator.types" in graph["aggregator.cluster.assigner"]


def test_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_aggregator_modules_import_one_another_without_cycles() -> None:
    assert find_cycle(import_graph()) is None
