"""Loading a job file: TOML -> overrides -> validated, frozen JobSpec, or one line saying what is wrong."""
from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any, Iterable

from pydantic import ValidationError

from radscale.config.specs import JobSpec
from radscale.errors import RadscaleError


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> {"a.b.c": value} (the keys `--set` takes; MLflow params; re-run diffs)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b=c` -> (['a','b'], value). The value is read as a TOML literal, else taken as a string."""
    if "=" not in item:
        raise RadscaleError(f"--set {item!r}: expected key=value")
    key, raw = item.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise RadscaleError(f"--set {item!r}: empty key")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return path, value


def apply_overrides(data: dict, overrides: Iterable[str]) -> dict:
    data = copy.deepcopy(data)
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for part in path[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise RadscaleError(f"--set {item!r}: {part!r} is not a table")
            node = nxt
        node[path[-1]] = value
    return data


def _format_error(source: str, err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    elif "input" in first and first["type"] != "missing" and not isinstance(first["input"], (dict, list)):
        msg = f"{msg} (got {first['input']!r})"
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{source}: {loc}: {msg}{more}"


def validate_job(data: dict, source: str = "<job>") -> JobSpec:
    try:
        return JobSpec.model_validate(data)
    except ValidationError as err:
        raise RadscaleError(_format_error(source, err)) from None


def load_job(path: str | Path, overrides: Iterable[str] = ()) -> JobSpec:
    """Read, override and validate a job file; relative paths inside are resolved against the job's folder."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise RadscaleError(f"{path}: job file not found") from None
    except tomllib.TOMLDecodeError as err:
        raise RadscaleError(f"{path}: not valid TOML: {err}") from None
    data = apply_overrides(data, overrides)
    job = validate_job(data, str(path))
    return resolve_paths(job, path.resolve().parent)


def resolve_paths(job: JobSpec, base: Path) -> JobSpec:
    """Manifests and weights relative to the job file; the output dir relative to the working directory."""
    def res(p: str) -> str:
        if not p or "://" in p:
            return p
        q = Path(p).expanduser()
        return str(q if q.is_absolute() else (base / q).resolve())

    data = job.model_dump()
    data["data"]["manifest"] = res(data["data"]["manifest"])
    data["data"]["ood_manifests"] = {k: res(v) for k, v in data["data"]["ood_manifests"].items()}
    for enc in data["encoders"]:
        enc["weights"] = res(enc["weights"])
    out = data["sweep"]["output_dir"]
    if "://" not in out:
        data["sweep"]["output_dir"] = str(Path(out).expanduser().resolve())
    return JobSpec.model_validate(data)
