"""The shape of the code: short flows, short functions and modules, no import cycle, I/O behind seams.

Read from the source with ``ast`` (nothing is imported), so a change that breaks a rule fails here
with the place named.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("tasks", "flows")
#: the benchmark is a script that measures; its length is not the product's
#: the benchmark measures peers (scikit-learn, DuckDB, pandas) beside bce-eval's own calls
EXEMPT = {"flows/bench.py", "flows/bench_hot.py", "flows/bench_startup.py", "flows/bench_scale.py"}
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 400
MAX_FLOW_LINES = 40

#: which modules may reach what (the seams); ``open`` is data I/O only in the modules that read data
DATA_MODULES = {"tasks/dataset.py", "tasks/reduce.py", "tasks/cache.py", "tasks/plots.py", "tasks/audit.py", "tasks/compare.py", "tasks/fit_streaming.py"}
SEAMS = {
    # model.py: the digest of a downloaded model's own files (not data)
    "data": ({"os.walk", "os.stat", "os.scandir", "os.listdir"}, {"tasks/storage.py", "tasks/model.py"}),
    "data files": ({"open"}, set(), ),
    # model.py and flavors.py: a flavour loads from a local copy; example_models.py logs the demo's models;
    # ui_app.py is MLflow's own server app (what `bce-eval ui` serves)
    "tracking": ({"mlflow"}, {"tasks/tracking.py", "tasks/model.py", "tasks/flavors.py", "tasks/example_models.py", "flows/ui_app.py"}),
    "scoring": (
        {"sklearn", "xgboost", "lightgbm", "catboost"},
        {"tasks/model.py", "tasks/scoring.py", "tasks/flavors.py", "tasks/fit_streaming.py", "tasks/circles.py", "tasks/example_models.py"},
    ),
}


def _modules() -> dict[str, ast.Module]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).glob("*.py")):
            rel = f"{pkg}/{path.name}"
            out[rel] = ast.parse(path.read_text(), filename=rel)
    return out


def _functions(tree: ast.Module):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def test_evaluate_flow_reads_top_to_bottom():
    tree = _modules()["flows/evaluate.py"]
    (flow,) = [f for f in _functions(tree) if f.name == "evaluate_flow"]
    assert flow.end_lineno - flow.lineno + 1 <= MAX_FLOW_LINES


def test_no_long_function_or_module():
    long_functions, long_modules = [], []
    for rel, tree in _modules().items():
        if rel in EXEMPT:
            continue
        lines = (REPO / rel).read_text().count("\n")
        if lines > MAX_MODULE_LINES:
            long_modules.append(f"{rel} ({lines} lines)")
        for f in _functions(tree):
            n = f.end_lineno - f.lineno + 1
            if n > MAX_FUNCTION_LINES:
                long_functions.append(f"{rel}:{f.lineno} {f.name} ({n} lines)")
    assert not long_modules + long_functions, long_modules + long_functions


def _module_level_imports(tree: ast.Module) -> set[str]:
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_no_import_cycle():
    mods = _modules()
    name_of = {rel: rel[:-3].replace("/", ".") for rel in mods}
    graph = {
        name_of[rel]: {m for m in _module_level_imports(tree) if m in name_of.values() and m != name_of[rel]}
        for rel, tree in mods.items()
    }
    seen, stack, cycles = set(), [], []

    def visit(node: str) -> None:
        if node in stack:
            cycles.append(stack[stack.index(node) :] + [node])
            return
        if node in seen:
            return
        seen.add(node)
        stack.append(node)
        for nxt in sorted(graph[node]):
            visit(nxt)
        stack.pop()

    for node in sorted(graph):
        visit(node)
    assert not cycles, cycles


def _reaches(tree: ast.Module) -> set[str]:
    """Modules imported (anywhere in the file) and the names of the data calls it makes."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call):
            fn = node.func
            if isinstance(fn, ast.Name) and fn.id == "open":
                found.add("open")
            elif isinstance(fn, ast.Attribute) and isinstance(fn.value, ast.Name) and fn.value.id == "os":
                found.add(f"os.{fn.attr}")
    return found


@pytest.mark.parametrize("seam", sorted(SEAMS))
def test_only_the_seams_reach_data_tracking_and_model_libraries(seam: str):
    names, allowed = SEAMS[seam]
    checked = DATA_MODULES if seam == "data files" else None
    offenders = {
        rel: sorted(_reaches(tree) & names)
        for rel, tree in _modules().items()
        if rel not in allowed and rel not in EXEMPT and (checked is None or rel in checked) and _reaches(tree) & names
    }
    assert not offenders, f"outside the {seam} seam: {offenders}"


def test_only_the_tracking_adapter_sets_mlflows_process_wide_uri():
    """Every MLflow call takes its URI; ``set_tracking_uri`` appears only in the adapter's one scoped block."""
    offenders = sorted(
        rel
        for rel, tree in _modules().items()
        if rel != "tasks/tracking.py" and any(isinstance(n, ast.Attribute) and n.attr == "set_tracking_uri" for n in ast.walk(tree))
    )
    assert not offenders, f"set_tracking_uri outside tasks/tracking.py: {offenders}"
