"""ARCHITECTURE.md layering: the core never imports ray or mlflow; scaling never imports torch."""
import ast
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


def _files(layer: str):
    return sorted((PKG / layer).rglob("*.py"))


def test_core_layers_never_import_ray_or_mlflow():
    offenders = [str(f.relative_to(PKG)) for layer in CORE for f in _files(layer)
                 if _imports(f) & {"ray", "mlflow"}]
    assert offenders == []


def test_scaling_never_imports_torch():
    assert [str(f) for f in _files("scaling") if "torch" in _imports(f)] == []


def test_core_never_imports_the_edges():
    offenders = []
    for layer in CORE:
        for f in _files(layer):
            if any(m.startswith(f"radscale.{e}") for m in _imports(f) for e in EDGE):
                offenders.append(str(f.relative_to(PKG)))
    assert offenders == []


def test_the_check_can_fail(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("import ray.data\nfrom mlflow import log_metric\n")
    assert {"ray", "mlflow"} <= _imports(bad)
