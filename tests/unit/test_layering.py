"""ARCHITECTURE.md layering: each core layer imports only the layers above it in the table (config lowest);
the core never imports ray, mlflow or the edges; scaling never imports torch; only tracking imports mlflow."""
import ast
import json
import subprocess
import sys
from functools import cache
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "radscale"
CORE = ("config", "data", "models", "objectives", "train", "evaluate", "scaling", "report")
EDGE = ("orchestrate", "tracking", "cli")


def _imports(path: Path, package: str = "") -> set[str]:
    """Every module a file names, top-level and full (`import a.b` -> a, a.b; `from a import b` -> a, a.b),
    relative imports resolved against `package` (the file's own, e.g. "radscale.data.importers")."""
    mods = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in
              ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant)):
            names = [str(node.args[0].value)]
        else:
            continue
        for name in names:
            parts = name.split(".")
            mods |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    return mods


def _package_of(path: Path) -> str:
    rel = path.resolve().relative_to(PKG.parent).with_suffix("")
    return ".".join(rel.parts[:-1])


@cache
def _scanned() -> dict[str, set[str]]:
    """Imports of every package file, parsed in a fresh interpreter: CPython 3.11's ast.parse can fail with
    "AST constructor recursion depth mismatch" while threads left by earlier tests run (seen in CI)."""
    files = [str(f) for f in sorted(PKG.rglob("*.py"))]
    out = subprocess.run([sys.executable, __file__, *files], capture_output=True, text=True, check=True).stdout
    return {f: set(mods) for f, mods in json.loads(out).items()}


def _files(layer: str):
    return sorted((PKG / layer).rglob("*.py"))


def _package_imports(path: Path) -> set[str]:
    return _scanned()[str(path)]


def test_core_layers_never_import_ray_or_mlflow():
    offenders = [str(f.relative_to(PKG)) for layer in CORE for f in _files(layer)
                 if _package_imports(f) & {"ray", "mlflow"}]
    assert offenders == []


def test_scaling_never_imports_torch():
    assert [str(f) for f in _files("scaling") if "torch" in _package_imports(f)] == []


def test_each_core_layer_imports_only_the_layers_above_it():
    offenders = []
    for i, layer in enumerate(CORE):
        below = {f"radscale.{b}" for b in CORE[i + 1:]}
        for f in _files(layer):
            offenders += [f"{f.relative_to(PKG)} -> {m}" for m in sorted(_package_imports(f) & below)]
    assert offenders == []


def test_only_tracking_imports_mlflow():
    assert [str(f.relative_to(PKG)) for f in PKG.rglob("*.py")
            if "mlflow" in _package_imports(f) and f.relative_to(PKG).parts[0] != "tracking"] == []


def test_core_never_imports_the_edges():
    offenders = []
    for layer in CORE:
        for f in _files(layer):
            if any(m.startswith(f"radscale.{e}") for m in _package_imports(f) for e in EDGE):
                offenders.append(str(f.relative_to(PKG)))
    assert offenders == []


def test_the_check_can_fail(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("import ray.data\nfrom mlflow import log_metric\nimport radscale.tracking.tracker\n"
                   "from ..orchestrate import sweep\nfrom . import batches\nimportlib.import_module('ray.tune')\n")
    got = _imports(bad, "radscale.train")
    assert {"ray", "ray.data", "mlflow", "radscale.tracking.tracker", "radscale.orchestrate",
            "radscale.orchestrate.sweep", "radscale.train.batches", "ray.tune"} <= got
    assert _package_of(PKG / "data" / "importers" / "base.py") == "radscale.data.importers"


if __name__ == "__main__":
    print(json.dumps({f: sorted(_imports(Path(f), _package_of(Path(f)))) for f in sys.argv[1:]}))
