"""The shape of the code: folders by concern, no import cycle (counting every import, inside
functions too), computation free of the orchestrator, MLflow and Prefect only behind their seams,
short functions and modules, and an architecture page that maps every module.

Read from the source with ``ast`` (nothing is imported), so a change that breaks a rule fails here
with the place named.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from functools import cache

import pytest

from tests.conftest import REPO

PACKAGES = ("tasks", "flows")
ARCHITECTURE = REPO / "docs" / "architecture.md"
#: the benchmark is a program that measures; its length is not the product's
EXEMPT_FROM_LENGTH = ("flows/bench/",)
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 400
MAX_FLOW_LINES = 40

#: who may import what: each library, the modules allowed to (the seams of docs/architecture.md)
SEAMS = {
    # the tracking adapter and its helpers; a flavour loads from a local copy; the example models
    # log themselves; the UI app is MLflow's own server app, the evaluator MLflow's own plugin
    "mlflow": (
        "tasks/tracking/",
        "tasks/models/loading.py",
        "tasks/models/flavors.py",
        "tasks/models/examples.py",
        "flows/cli/ui_app.py",
        "flows/api/mlflow_evaluator.py",
    ),
    # the flows and their steps, the CLI's process set-up, the benchmark's flow timings; never tasks/
    "prefect": ("flows/",),
    "prefect_dask": ("flows/steps.py",),
    # the model seam, the seed's MLP; the benchmark measures bce-eval against the libraries' own predict
    "sklearn": ("tasks/models/", "tasks/seed/", "flows/bench/"),
    "xgboost": ("tasks/models/", "flows/bench/"),
    "lightgbm": ("tasks/models/", "flows/bench/"),
    "catboost": ("tasks/models/",),
}
#: data calls (file system walks) only behind the storage seam; models/loading digests a model's own files
DATA_CALLS = ({"os.walk", "os.stat", "os.scandir", "os.listdir"}, ("tasks/data/storage.py", "tasks/models/loading.py"))


@cache
def _modules() -> dict[str, ast.Module]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            out[rel] = ast.parse(path.read_text(), filename=rel)
    return out


def _dotted(rel: str) -> str:
    name = rel[:-3].replace("/", ".")
    return name[: -len(".__init__")] if name.endswith(".__init__") else name


def _imports(tree: ast.Module, rel: str) -> set[str]:
    """Every module name an import statement names, anywhere in the file (module level, functions,
    ``if TYPE_CHECKING``): ``import a.b`` gives a.b; ``from a import b`` gives a and a.b."""
    names = set()
    package = _dotted(rel).rsplit(".", 1)[0] if not rel.endswith("__init__.py") else _dotted(rel)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return names


@cache
def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = {_dotted(rel): rel for rel in mods}
    return {
        rel: {known[m] for m in _imports(tree, rel) if m in known and known[m] != rel} for rel, tree in mods.items()
    }


def _allowed(rel: str, places: tuple[str, ...]) -> bool:
    return any(rel == p or (p.endswith("/") and rel.startswith(p)) for p in places)


def test_no_import_cycle_counting_imports_inside_functions():
    graph, cycles, seen, stack = _graph(), [], set(), []

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


def test_no_cycle_between_the_folders_of_tasks():
    """tasks/' folders stand in layers: each imports only the ones below it (data, tracking < models < metrics < judge <
    review)."""

    def folder(rel: str) -> str:
        parts = rel.split("/")
        return "/".join(parts[:2]) if len(parts) > 2 else rel

    edges = {(folder(a), folder(b)) for a, targets in _graph().items() if a.startswith("tasks/") for b in targets}
    edges = {(a, b) for a, b in edges if a != b}
    both_ways = sorted((a, b) for a, b in edges if (b, a) in edges and a < b)
    assert not both_ways, both_ways


def test_computation_never_imports_the_orchestrator_or_the_flows():
    offenders = {
        rel: sorted(m for m in _imports(tree, rel) if m.split(".")[0] in {"prefect", "prefect_dask", "flows"})
        for rel, tree in _modules().items()
        if rel.startswith("tasks/")
    }
    assert not {k: v for k, v in offenders.items() if v}


@pytest.mark.parametrize("library", sorted(SEAMS))
def test_each_library_is_imported_only_behind_its_seam(library: str):
    offenders = sorted(
        rel
        for rel, tree in _modules().items()
        if not _allowed(rel, SEAMS[library]) and any(m.split(".")[0] == library for m in _imports(tree, rel))
    )
    assert not offenders, f"{library} imported outside its seam: {offenders}"


def test_data_is_walked_only_behind_the_storage_seam():
    calls, allowed = DATA_CALLS
    offenders = {}
    for rel, tree in _modules().items():
        made = {
            f"os.{n.func.attr}"
            for n in ast.walk(tree)
            if isinstance(n, ast.Call)
            and isinstance(n.func, ast.Attribute)
            and isinstance(n.func.value, ast.Name)
            and n.func.value.id == "os"
        }
        if made & calls and rel.startswith("tasks/") and not _allowed(rel, allowed):
            offenders[rel] = sorted(made & calls)
    assert not offenders, offenders


def test_only_the_tracking_adapter_sets_mlflows_process_wide_uri():
    """Every MLflow call takes its URI; ``set_tracking_uri`` appears only in the adapter's one scoped block."""
    offenders = sorted(
        rel
        for rel, tree in _modules().items()
        if rel != "tasks/tracking/adapter.py"
        and any(isinstance(n, ast.Attribute) and n.attr == "set_tracking_uri" for n in ast.walk(tree))
    )
    assert not offenders, f"set_tracking_uri outside tasks/tracking/adapter.py: {offenders}"


def test_no_environment_variable_is_a_channel_between_modules():
    """bce-eval sets only its defaults for the libraries' own settings (and the temporary server's
    address for Prefect): a variable one module writes and another reads is an argument in disguise."""
    written = {}
    for rel, tree in _modules().items():
        for node in ast.walk(tree):
            target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None
            if isinstance(target, ast.Subscript) and ast.unparse(target.value) == "os.environ":
                written.setdefault(ast.unparse(target.slice), set()).add(rel)
    own = {name: places for name, places in written.items() if "BCE_EVAL" in name}
    assert not own, own


def test_evaluate_flow_reads_top_to_bottom():
    (flow,) = [
        f
        for f in ast.walk(_modules()["flows/evaluate.py"])
        if isinstance(f, ast.FunctionDef) and f.name == "evaluate_flow"
    ]
    assert flow.end_lineno - flow.lineno + 1 <= MAX_FLOW_LINES


def test_no_long_function_or_module():
    long_functions, long_modules = [], []
    for rel, tree in _modules().items():
        if rel.startswith(EXEMPT_FROM_LENGTH):
            continue
        lines = (REPO / rel).read_text().count("\n")
        if lines > MAX_MODULE_LINES:
            long_modules.append(f"{rel} ({lines} lines)")
        for f in ast.walk(tree):
            if (
                isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                and f.end_lineno - f.lineno + 1 > MAX_FUNCTION_LINES
            ):
                long_functions.append(f"{rel}:{f.lineno} {f.name} ({f.end_lineno - f.lineno + 1} lines)")
    assert not long_modules + long_functions, long_modules + long_functions


def test_the_architecture_page_maps_every_module():
    """docs/architecture.md names every module of flows/ and tasks/ (its map), and no module that is gone."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    named = set(re.findall(r"`((?:tasks|flows)/[a-z_/]+\.py)`", text))
    modules = {rel for rel in _modules() if not rel.endswith("__init__.py")}
    assert modules - named == set(), "modules the architecture page does not map"
    assert named - modules == set(), "the architecture page names modules that do not exist"


def test_the_architecture_page_states_the_seams_this_test_holds():
    """Its seams table says, for each library, the places that may import it: the same as :data:`SEAMS`."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    for library, places in SEAMS.items():
        row = re.search(rf"^\| `{library}` \| (.+?) \|$", text, flags=re.M)
        assert row, f"no row for {library} in the architecture page's seams table"
        assert set(re.findall(r"`([^`]+)`", row.group(1))) == set(places), library


def test_tests_mirror_the_code_folders():
    """Each test file sits in the folder of the code it tests: tests/<package>/<concern>/."""
    folders = {p.parent.relative_to(REPO / "tests").as_posix() for p in (REPO / "tests").rglob("test_*.py")}
    code = {
        p.relative_to(REPO).as_posix()
        for pkg in PACKAGES
        for p in (REPO / pkg).rglob("*")
        if p.is_dir() and p.name != "__pycache__"
    }
    code |= {*PACKAGES, "."}  # ".": what covers the whole repository (the README, this file)
    assert folders <= code, f"test folders with no code folder of the same name: {sorted(folders - code)}"


def _fixture_args(tree: ast.Module) -> dict[str, set[str]]:
    """Each ``@pytest.fixture`` function of a file: the fixtures it asks for."""
    out = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and any("fixture" in ast.unparse(d) for d in node.decorator_list):
            out[node.name] = {a.arg for a in node.args.args}
    return out


def _is_system(fn: ast.FunctionDef, fixtures: dict[str, set[str]], module_marked: bool) -> bool:
    from tests.conftest import SYSTEM_FIXTURES

    if module_marked or any("mark.system" in ast.unparse(d) for d in fn.decorator_list):
        return True
    seen, todo = set(), [a.arg for a in fn.args.args]
    while todo:
        name = todo.pop()
        if name in SYSTEM_FIXTURES:
            return True
        if name not in seen:
            seen.add(name)
            todo.extend(fixtures.get(name, ()))
    return False


def test_every_module_under_tasks_is_imported_by_a_fast_test():
    """``make test-fast`` (``-m "not system"``) reaches every module of tasks/: a module-level import
    of a file with a fast test, or an import inside a fast test."""
    conftest_fixtures = _fixture_args(ast.parse((REPO / "tests" / "conftest.py").read_text()))
    reached: set[str] = set()
    for path in (REPO / "tests").rglob("test_*.py"):
        tree = ast.parse(path.read_text())
        marked = any(
            isinstance(n, ast.Assign) and "system" in ast.unparse(n) and "pytestmark" in ast.unparse(n.targets[0])
            for n in tree.body
        )
        fixtures = {**conftest_fixtures, **_fixture_args(tree)}
        fast = [
            n
            for n in tree.body
            if isinstance(n, ast.FunctionDef) and n.name.startswith("test_") and not _is_system(n, fixtures, marked)
        ]
        if not fast:
            continue
        top = ast.Module(body=[n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))], type_ignores=[])
        for scope in (top, *fast):
            reached |= set(
                _imports(
                    scope if isinstance(scope, ast.Module) else ast.Module(body=[scope], type_ignores=[]), "tests/x.py"
                )
            )
    modules = {_dotted(rel) for rel in _modules() if rel.startswith("tasks/") and not rel.endswith("__init__.py")}
    assert modules - reached == set(), "modules of tasks/ no fast test imports"


def test_importing_the_flows_loads_no_compiled_loop_and_no_scipy():
    """numba and scipy load when a pass, a roll-up or a per-slice gate runs, never at start-up (a flow's import)."""
    code = (
        "import sys, flows.evaluate, flows.compare; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'numba', 'scipy'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]", out.stdout
