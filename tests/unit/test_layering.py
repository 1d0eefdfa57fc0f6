"""ARCHITECTURE.md layering: the core never imports ray or mlflow; scaling never imports torch."""
import ast
import json
import subprocess
import sys
from functools import cache
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "radscale"
CORE = ("config", "data", "models", "objectives", "train", "evaluate", "scaling", "report")
EDGE = ("orchestrate", "tracking", "cli")


def _imports(path: Path) -> set[str]:
    mods = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            mods |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            mods.add(node.module.split(".")[0])
            if node.module.startswith("radscale."):
                mods.add(node.module)
    return mods


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


def test_core_never_imports_the_edges():
    offenders = []
    for layer in CORE:
        for f in _files(layer):
            if any(m.startswith(f"radscale.{e}") for m in _package_imports(f) for e in EDGE):
                offenders.append(str(f.relative_to(PKG)))
    assert offenders == []


def test_the_check_can_fail(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("import ray.data\nfrom mlflow import log_metric\n")
    assert {"ray", "mlflow"} <= _imports(bad)


if __name__ == "__main__":
    print(json.dumps({f: sorted(_imports(Path(f))) for f in sys.argv[1:]}))
