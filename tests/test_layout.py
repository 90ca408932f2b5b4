"""The package's layout: imports point one way (no cycle), and errors live in ``lrgmm.errors``.

The import graph is read from the source (``ast``), not from ``sys.modules``: every ``import`` and
``from ... import`` of a ``lrgmm`` module counts, relative or absolute, at module level or inside
a function (a lazy import that only dodges a cycle is still a dependency), ``TYPE_CHECKING``
blocks included. ``from .pkg import name`` is an edge to ``lrgmm.pkg.name`` when that is a
module, else to ``lrgmm.pkg``. Importing ``lrgmm.a.b`` runs ``lrgmm/a/__init__.py`` first; that
implicit edge to the parent package is not counted, as import linters do not count it.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import lrgmm
import lrgmm.errors

PACKAGE_DIR = Path(lrgmm.__file__).resolve().parent


def package_modules(root: Path = PACKAGE_DIR) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package ``__init__``), for every ``.py`` under ``root``."""
    mods = {}
    for f in sorted(root.rglob("*.py")):
        parts = list(f.relative_to(root.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        mods[".".join(parts)] = (f, is_pkg)
    return mods


def _targets(module: str, is_pkg: bool, node: ast.Import | ast.ImportFrom, modules) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:  # relative: level 1 is the module's own package
        base = module.split(".") if is_pkg else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    return [f"{target}.{a.name}" if f"{target}.{a.name}" in modules else target for a in node.names]


def import_graph(root: Path = PACKAGE_DIR) -> dict[str, dict[str, int]]:
    """module -> {imported package module: line of the first such import}."""
    modules = package_modules(root)
    graph: dict[str, dict[str, int]] = {m: {} for m in modules}
    for module, (path, is_pkg) in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _targets(module, is_pkg, node, modules):
                    if target in modules and target != module:
                        graph[module].setdefault(target, node.lineno)
    return graph


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None: depth-first search, grey/black marking."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        path.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == 1:
                return path[path.index(w):] + [w]
            if w not in state and (found := visit(w)):
                return found
        path.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state and (found := visit(v)):
            return found
    return None


def _describe(cycle: list[str], graph) -> str:
    return " -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:])) + f" -> {cycle[-1]}"


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert "lrgmm.pipeline" in graph and "lrgmm.errors" in graph and len(graph) > 40
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + _describe(cycle, graph)


# The architecture, bottom to top: a part may import only parts of lower layers (and itself).
LAYERS = [
    {"_version", "errors", "defaults"},
    {"limits"},
    {"core"},  # the method on tensors: projector, mixture, sampling, NN step, model, conditioning
    {"io"},  # files: atomic writes, images, tensor and model files, latent cache, weights, paths
    {"autoencoders", "data", "figures"},
    {"editing", "metrics"},
    {"pipeline"},  # images in, faces and provenance out
    {"baselines", "evaluation", "demo"},
    {"studio"},
    {"cli"},
    {"__main__", "lrgmm"},
]


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "lrgmm"


def test_every_part_imports_only_lower_layers():
    graph = import_graph()
    layer = {part: i for i, parts in enumerate(LAYERS) for part in parts}
    parts = {_part(m) for m in graph}
    assert parts == set(layer), f"parts missing from LAYERS: {parts - set(layer)}; stale: {set(layer) - parts}"
    upward = [
        f"{a} (line {line}) imports {b}"
        for a, deps in graph.items() for b, line in deps.items()
        if _part(a) != _part(b) and layer[_part(b)] >= layer[_part(a)]
    ]
    assert upward == []


def test_core_is_tensor_code_only():
    """lrgmm.core reads and writes no files and draws no pictures: no file, image or JSON module,
    nothing of lrgmm above the leaves."""
    io_modules = {"os", "pathlib", "json", "PIL", "shutil", "tempfile", "io", "safetensors", "urllib"}
    found = []
    for f in sorted((PACKAGE_DIR / "core").rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            found += [f"{f.name}:{node.lineno} {n}" for n in names if n.split(".")[0] in io_modules]
    assert found == []


def test_no_submodule_imports_the_package_root():
    """``from . import __version__`` in a submodule imports ``lrgmm/__init__.py``, which imports
    the submodule: the version lives in ``lrgmm._version`` instead."""
    graph = import_graph()
    upward = {m: deps["lrgmm"] for m, deps in graph.items() if m != "lrgmm" and "lrgmm" in deps}
    assert upward == {}
    assert graph["lrgmm._version"] == {} and graph["lrgmm.errors"] == {}  # leaves


def test_the_cycle_finder_finds_cycles(tmp_path):
    """The checker itself, on a throw-away package with a lazy (function-level) relative import
    closing a cycle, a ``from . import submodule`` edge, and an absolute import."""
    pkg = tmp_path / "toy"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .a import A\n")
    (pkg / "a.py").write_text("from .b import B\nA = 1\n")
    (pkg / "b.py").write_text("def f():\n    from .sub import c\n    return c\nB = 2\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text("import toy.d\n")
    (pkg / "d.py").write_text("x = 1\n")
    graph = import_graph(pkg)
    assert graph["toy.b"] == {"toy.sub.c": 2} and graph["toy.sub.c"] == {"toy.d": 1}
    assert find_cycle(graph) is None
    (pkg / "d.py").write_text("def g():\n    from .a import A\n    return A\n")
    cycle = find_cycle(import_graph(pkg))
    assert cycle is not None and cycle[0] == cycle[-1]
    assert set(cycle) == {"toy.a", "toy.b", "toy.sub.c", "toy.d"}
    assert "toy.d (line 2) -> toy.a" in _describe(cycle, import_graph(pkg))


# ------------------------------------------------------------------------------------ errors


def _package_classes():
    """Every exception or warning class defined (by ``class`` statement) anywhere in the package."""
    found = []
    for module, (path, _) in package_modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                bases = {ast.unparse(b) for b in node.bases}
                if node.name.endswith(("Error", "Warning", "Interrupted")) or bases & {
                    "Exception", "ValueError", "UserWarning", "RuntimeError", "KeyboardInterrupt"
                }:
                    found.append((module, node.name))
    return found


def test_every_error_and_warning_class_is_defined_in_errors():
    defined = _package_classes()
    elsewhere = [(m, n) for m, n in defined if m != "lrgmm.errors"]
    assert elsewhere == []
    names = {n for _, n in defined}
    assert {"LrgmmError", "NotFittedError", "ParameterError", "LrgmmWarning", "EditError", "StudioError"} <= names


def test_error_hierarchy():
    e = lrgmm.errors
    errors = [c for _, c in inspect.getmembers(e, inspect.isclass) if issubclass(c, Exception)]
    warnings_ = [c for c in errors if issubclass(c, Warning)]
    for c in errors:
        if c in warnings_ or c is e.EncodingInterrupted:
            continue
        assert issubclass(c, e.LrgmmError), c
    assert warnings_ and all(issubclass(c, e.LrgmmWarning) and issubclass(c, UserWarning) for c in warnings_)
    assert issubclass(e.EncodingInterrupted, KeyboardInterrupt)
    # Not fitted: the package's error, and what scikit-learn's NotFittedError is.
    assert issubclass(e.NotFittedError, (e.LrgmmError)) and issubclass(e.NotFittedError, ValueError)
    assert issubclass(e.NotFittedError, AttributeError)
    # Bad values stay ValueErrors, so code that caught ValueError still does.
    for c in (e.ParameterError, e.LimitError, e.BudgetError, e.LabelError, e.MaskError, e.EditError,
              e.ImageTooLargeError):
        assert issubclass(c, ValueError), c
    assert issubclass(e.ImageTooLargeError, e.ImageInputError)


def test_not_fitted_is_one_error_everywhere():
    from lrgmm.errors import NotFittedError
    from lrgmm.core.model import LRGMM
    from lrgmm.pipeline import FacePipeline

    class Probe:
        @property
        def model(self):
            FacePipeline().check_is_fitted()

    assert not hasattr(Probe(), "model")  # an AttributeError: hasattr says False, no traceback
    with pytest.raises(NotFittedError, match="FacePipeline is not fitted: call fit"):
        FacePipeline().generate(1, seed=0)
    with pytest.raises(NotFittedError, match="LRGMM is not fitted"):
        LRGMM().parameter_counts()
    with pytest.raises(NotFittedError, match="FacePipeline is not fitted"):
        FacePipeline().metadata()


def test_constructor_defaults_come_from_the_one_table():
    """LRGMM, FacePipeline and LowRankGaussianMixture take every hyperparameter default they share
    with ``DEFAULTS`` from it (the CLI and the studio read those signatures)."""
    import inspect

    from lrgmm import DEFAULTS, LRGMM, FacePipeline, LowRankGaussianMixture
    from lrgmm.core.nn_projection import nn_project

    for cls, own in ((LRGMM, set()), (FacePipeline, set()), (LowRankGaussianMixture, {"n_components"})):
        sig = inspect.signature(cls.__init__).parameters
        shared = set(DEFAULTS) & set(sig) - own
        assert shared, cls
        for name in shared:
            assert sig[name].default == DEFAULTS[name], (cls.__name__, name)
    assert set(DEFAULTS) <= set(inspect.signature(LRGMM.__init__).parameters)
    assert set(DEFAULTS) <= set(inspect.signature(FacePipeline.__init__).parameters)
    nn = inspect.signature(nn_project).parameters
    assert nn["patch_size"].default == DEFAULTS["patch_size"] and nn["iterations"].default == DEFAULTS["nn_iterations"]
