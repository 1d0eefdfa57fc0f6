"""Offline checks and cost bounds for radscale's cluster definitions (cluster/*.yaml, cluster/kuberay/).

Autoscaler YAMLs go through Ray's own schema: `prepare_config` then `validate_config`. Neither calls a
cloud: `prepare_config` only merges the provider's packaged defaults.yaml (and docker/min-max filling).
The steps of `ray up` that do call the cloud -- `fillout_available_node_types_resources` (AWS
DescribeInstanceTypes) and the provider's `bootstrap_config` (IAM roles, key pairs, subnets, security
groups; GCP service accounts) -- are never called here. KubeRay manifests get structural checks that
mirror the KubeRay operator's own validation plus radscale's cost rules.

Cost bound (docs RAY.md, "Cost bound"): node caps x prices; the head always counts once.
"""

from __future__ import annotations

import copy
import json
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import yaml

NODE_TYPE_LABEL = "radscale.io/node-type"  # KubeRay pods name their prices.toml entry with it
# Ray fills these from its provider defaults when absent (e.g. a nightly-wheel setup_command, a
# global max_workers of 2), so radscale insists they are written out.
_EXPLICIT_KEYS = (
    "cluster_name", "provider", "max_workers", "idle_timeout_minutes", "head_node_type",
    "available_node_types", "docker", "initialization_commands", "setup_commands",
    "head_setup_commands", "worker_setup_commands", "head_start_ray_commands",
    "worker_start_ray_commands",
)
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_RAY_RESOURCE_PARAMS = ("num-cpus", "num-gpus", "memory", "resources")


class ClusterConfigError(ValueError):
    """A cluster definition or price table that radscale refuses; the message is one line."""


@dataclass(frozen=True)
class NodeCaps:
    """How many nodes of each type a cluster may run at once."""

    head_type: str
    worker_caps: Mapping[str, int]  # node type -> most nodes of that type (0 = defined but off)
    max_workers: int | None  # global cap on all workers together; None when there is none


def _fail(where: str, message: str) -> NoReturn:
    raise ClusterConfigError(" ".join(f"{where}: {message}".split()))


def _read_yaml(path: str | Path) -> dict:
    try:
        docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d is not None]
    except OSError as exc:
        _fail(str(path), f"cannot read ({exc.strerror})")
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        _fail(str(path), f"not valid YAML{line} ({getattr(exc, 'problem', None) or exc})")
    if len(docs) != 1 or not isinstance(docs[0], dict):
        _fail(str(path), "expected exactly one YAML mapping")
    return docs[0]


def _mapping(parent: Mapping, key: str, where: str) -> dict:
    value = parent.get(key)
    if not isinstance(value, dict):
        _fail(f"{where}.{key}", "missing or not a mapping")
    return value


def _int(value: Any, where: str, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        _fail(where, f"must be an integer >= {low}, got {value!r}")
    return value


# ---------------------------------------------------------------- Ray autoscaler YAML


def validate_autoscaler_yaml(path: str | Path) -> dict:
    """Check a cluster-launcher YAML with Ray's schema and radscale's rules; return the prepared config."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    where = str(path)
    raw = _read_yaml(path)
    for key in _EXPLICIT_KEYS:
        if key not in raw:
            _fail(f"{where}: {key}", "missing; Ray would silently take its provider default")
    provider = raw["provider"].get("type") if isinstance(raw["provider"], dict) else None
    if provider in (None, "kuberay", "local"):
        _fail(f"{where}: provider.type", f"must name a cloud provider, got {provider!r}")
    try:
        config = prepare_config(copy.deepcopy(raw))
        validate_config(config)
    except jsonschema.ValidationError as exc:
        loc = ".".join(str(p) for p in exc.absolute_path) or "top level"
        _fail(f"{where}: {loc}", f"Ray schema: {exc.message}")
    except (ValueError, KeyError, TypeError, AssertionError, RuntimeError, NotImplementedError) as exc:
        _fail(where, f"Ray rejected the config: {type(exc).__name__}: {exc}")
    _check_node_types(raw, config, where)
    image = str(config["docker"].get("image", ""))
    if ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
        _fail(f"{where}: docker.image", f"pin a tag (the deps live in the image), got {image!r}")
    if not config["idle_timeout_minutes"] > 0:
        _fail(f"{where}: idle_timeout_minutes", "must be > 0")
    return config


def _check_node_types(raw: dict, config: dict, where: str) -> None:
    head = config["head_node_type"]
    gpu_types, data_types = [], []
    for name, node in raw["available_node_types"].items():
        at = f"{where}: available_node_types.{name}"
        for key, value in node["resources"].items():
            _int(value, f"{at}.resources.{key}")  # Ray's schema lets 1.0 through
        if name == head:
            if node["resources"].get("GPU") != 0:
                _fail(f"{at}.resources.GPU", "the head must advertise GPU: 0 so no training lands on it")
            if config["available_node_types"][name]["max_workers"] != 0:
                _fail(f"{at}.max_workers", "the head node type must not launch workers")
            continue
        if "min_workers" not in node or "max_workers" not in node:
            _fail(at, "set min_workers and max_workers (Ray defaults max_workers to the global cap)")
        low = _int(node["min_workers"], f"{at}.min_workers")
        high = _int(node["max_workers"], f"{at}.max_workers")
        if low > high:
            _fail(at, f"min_workers {low} > max_workers {high}")
        if high > 0 and node["resources"].get("GPU", 0) > 0:
            gpu_types.append(name)
        if high > 0 and node["resources"].get("data", 0) > 0:
            data_types.append(name)
    if not gpu_types:
        _fail(f"{where}: available_node_types", "no GPU node type with max_workers > 0")
    if not data_types:
        _fail(f"{where}: available_node_types", "no CPU data node type (resources.data) with max_workers > 0")


# ---------------------------------------------------------------- KubeRay manifests


def validate_kuberay_manifest(path: str | Path) -> dict:
    """Structural checks of a KubeRay RayCluster or RayJob manifest; return the parsed manifest."""
    where = str(path)
    manifest = _read_yaml(path)
    if manifest.get("apiVersion") != "ray.io/v1":
        _fail(f"{where}: apiVersion", f"must be ray.io/v1, got {manifest.get('apiVersion')!r}")
    kind = manifest.get("kind")
    if kind not in ("RayCluster", "RayJob"):
        _fail(f"{where}: kind", f"must be RayCluster or RayJob, got {kind!r}")
    name = (manifest.get("metadata") or {}).get("name")
    if not isinstance(name, str) or not _DNS_LABEL.match(name):
        _fail(f"{where}: metadata.name", f"must be a DNS-1123 label, got {name!r}")
    spec = manifest.get("spec")
    if not isinstance(spec, dict):
        _fail(f"{where}: spec", "missing or not a mapping")
    if kind == "RayJob":
        _check_rayjob(spec, f"{where}: spec")
        cluster = _mapping(spec, "rayClusterSpec", f"{where}: spec")
        _check_cluster_spec(cluster, f"{where}: spec.rayClusterSpec")
    else:
        _check_cluster_spec(spec, f"{where}: spec")
    return manifest


def _check_rayjob(spec: dict, where: str) -> None:
    if not isinstance(spec.get("entrypoint"), str) or not spec["entrypoint"].strip():
        _fail(f"{where}.entrypoint", "missing or empty")
    text = spec.get("runtimeEnvYAML")
    if not isinstance(text, str):
        _fail(f"{where}.runtimeEnvYAML", "missing (a YAML string)")
    try:
        runtime_env = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or exc
        _fail(f"{where}.runtimeEnvYAML", f"does not parse as YAML ({problem})")
    if not isinstance(runtime_env, dict):
        _fail(f"{where}.runtimeEnvYAML", "must be a YAML mapping")
    if "working_dir" in runtime_env and "://" not in str(runtime_env["working_dir"]):
        _fail(f"{where}.runtimeEnvYAML.working_dir", "must be a remote URI (a RayJob has no local dir)")
    for key, value in (runtime_env.get("env_vars") or {}).items():
        if not isinstance(value, str):
            _fail(f"{where}.runtimeEnvYAML.env_vars.{key}", f"must be a string, got {value!r}")
    if spec.get("shutdownAfterJobFinishes") is not True:
        _fail(f"{where}.shutdownAfterJobFinishes", "must be true so the cluster goes when the job ends")
    _int(spec.get("ttlSecondsAfterFinished"), f"{where}.ttlSecondsAfterFinished")
    _int(spec.get("activeDeadlineSeconds"), f"{where}.activeDeadlineSeconds (hard wall-clock kill)", low=1)
    if "backoffLimit" in spec:
        _int(spec["backoffLimit"], f"{where}.backoffLimit")


def _check_cluster_spec(spec: dict, where: str) -> None:
    if spec.get("enableInTreeAutoscaling") is not True:
        _fail(f"{where}.enableInTreeAutoscaling", "must be true (caps and idle timeouts bound the cost)")
    options = _mapping(spec, "autoscalerOptions", where)
    _int(options.get("idleTimeoutSeconds"), f"{where}.autoscalerOptions.idleTimeoutSeconds", low=1)
    mode = (spec.get("authOptions") or {}).get("mode", "token")
    if mode not in ("token", "disabled"):
        _fail(f"{where}.authOptions.mode", f"must be token or disabled, got {mode!r}")
    head = _mapping(spec, "headGroupSpec", where)
    params = _check_group_resources(head, f"{where}.headGroupSpec")
    if params.get("num-gpus") != "0" and (head.get("resources") or {}).get("GPU") != "0":
        _fail(f"{where}.headGroupSpec.rayStartParams.num-gpus", 'must be "0": no training on the head')
    _check_pod_template(head, f"{where}.headGroupSpec", allow_gpu=False)
    groups = spec.get("workerGroupSpecs")
    if not isinstance(groups, list) or not groups:
        _fail(f"{where}.workerGroupSpecs", "missing or empty")
    seen, gpu_groups = set(), 0
    for i, group in enumerate(groups):
        at = f"{where}.workerGroupSpecs[{i}]"
        name = group.get("groupName") if isinstance(group, dict) else None
        if not isinstance(name, str) or not _DNS_LABEL.match(name) or name in seen:
            _fail(f"{at}.groupName", f"must be a unique DNS-1123 label, got {name!r}")
        seen.add(name)
        low = _int(group.get("minReplicas"), f"{at}.minReplicas")
        high = _int(group.get("maxReplicas"), f"{at}.maxReplicas")
        replicas = _int(group.get("replicas", low), f"{at}.replicas")
        if not low <= replicas <= high:
            _fail(at, f"need minReplicas <= replicas <= maxReplicas, got {low} <= {replicas} <= {high}")
        _int(group.get("numOfHosts", 1), f"{at}.numOfHosts", low=1)  # pods per replica, for the cost bound
        if "idleTimeoutSeconds" in group:
            _int(group["idleTimeoutSeconds"], f"{at}.idleTimeoutSeconds")
            if options.get("version") != "v2":
                _fail(f"{at}.idleTimeoutSeconds", "KubeRay needs autoscalerOptions.version: v2 for it")
        _check_group_resources(group, at)
        gpus = _check_pod_template(group, at, allow_gpu=True)
        gpu_groups += gpus > 0 and high > 0
    if not gpu_groups:
        _fail(f"{where}.workerGroupSpecs", "no worker group with nvidia.com/gpu and maxReplicas > 0")


def _check_group_resources(group: dict, where: str) -> dict:
    params = group.get("rayStartParams")
    if not isinstance(params, dict):
        _fail(f"{where}.rayStartParams", "missing (use {} for none)")
    for key, value in params.items():
        if not isinstance(value, str):  # the CRD is map[string]string; the API server refuses others
            _fail(f"{where}.rayStartParams.{key}", f"must be a string, got {value!r}")
    custom = dict(group.get("resources") or {})
    if custom and any(k in params for k in _RAY_RESOURCE_PARAMS):
        _fail(where, "set Ray resources in rayStartParams or in resources, not both (KubeRay refuses it)")
    if "resources" in params:  # KubeRay's quoted form: '"{\"data\": 1}"'
        text = params["resources"]
        try:
            custom = json.loads(json.loads(text) if text.startswith('"') else text)
        except (ValueError, TypeError):
            custom = None
        if not isinstance(custom, dict):
            _fail(f"{where}.rayStartParams.resources", "not a JSON object")
    for key, value in custom.items():
        if isinstance(value, bool) or not re.fullmatch(r"\d+", str(value)):
            _fail(f"{where}.resources.{key}", f"Ray custom resources are whole numbers, got {value!r}")
    return params


def _check_pod_template(group: dict, where: str, allow_gpu: bool) -> int:
    template = _mapping(group, "template", where)
    label = ((template.get("metadata") or {}).get("labels") or {}).get(NODE_TYPE_LABEL)
    if not isinstance(label, str) or not label:
        _fail(f"{where}.template.metadata.labels", f"missing {NODE_TYPE_LABEL} (its prices.toml entry)")
    # The pod label is Kubernetes'; the cost tracker reads Ray's node labels, which `ray start --labels` sets.
    ray_labels = dict(kv.split("=", 1) for kv in str((group.get("rayStartParams") or {}).get("labels", "")).split(",")
                      if "=" in kv)
    if ray_labels.get(NODE_TYPE_LABEL) != label:
        _fail(f"{where}.rayStartParams.labels", f"must contain {NODE_TYPE_LABEL}={label} (the pod label), so the "
                                                f"cost tracker prices this node")
    containers = _mapping(template, "spec", f"{where}.template").get("containers")
    if not isinstance(containers, list) or not containers:
        _fail(f"{where}.template.spec.containers", "missing or empty")
    for i, container in enumerate(containers):
        if not isinstance(container, dict) or not str(container.get("image", "")).strip():
            _fail(f"{where}.template.spec.containers[{i}].image", "missing")
    at = f"{where}.template.spec.containers[0].resources"
    resources = containers[0].get("resources") or {}
    limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
    for key in ("cpu", "memory"):
        if key not in limits:
            _fail(f"{at}.limits.{key}", "missing (Ray sizes the node from the limits)")
    gpus = limits.get("nvidia.com/gpu", 0)
    if not re.fullmatch(r"\d+", str(gpus)):
        _fail(f"{at}.limits.nvidia.com/gpu", f"must be a whole number, got {gpus!r}")
    if "nvidia.com/gpu" in requests and str(requests["nvidia.com/gpu"]) != str(gpus):
        _fail(f"{at}.requests.nvidia.com/gpu", "must equal the limit (Kubernetes extended resources)")
    if int(gpus) > 0 and not allow_gpu:
        _fail(f"{at}.limits.nvidia.com/gpu", "the head must not hold GPUs")
    return int(gpus)


# ---------------------------------------------------------------- prices and cost bound


def load_prices(path: str | Path, *, ceiling: bool = False) -> dict[str, float]:
    """US$ per node-hour per node type; `ceiling` prices spot types at their on-demand ceiling."""
    try:
        table = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        _fail(str(path), f"cannot read ({exc.strerror})")
    except tomllib.TOMLDecodeError as exc:
        _fail(str(path), f"not valid TOML ({exc})")
    prices = {}
    for name, entry in table.items():
        at = f"{path}: [{name}]"
        if not isinstance(entry, dict):
            _fail(at, "expected a table per node type")
        market = entry.get("market")
        if market not in ("on-demand", "spot") or not isinstance(entry.get("instance"), str):
            _fail(at, 'needs instance = "..." and market = "on-demand" or "spot"')
        price = _price(entry.get("usd_per_hour"), f"{at}.usd_per_hour")
        if market == "spot":
            on_demand = _price(entry.get("on_demand_usd_per_hour"), f"{at}.on_demand_usd_per_hour")
            if on_demand < price:
                _fail(at, "spot usd_per_hour above its on-demand ceiling")
            price = on_demand if ceiling else price
        prices[name] = price
    return prices


def _price(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < math.inf):
        _fail(where, f"must be a positive number, got {value!r}")
    return float(value)


def node_caps(config: dict) -> NodeCaps:
    """Caps of a validated autoscaler config or KubeRay manifest (told apart by apiVersion)."""
    if "apiVersion" not in config:
        types = config["available_node_types"]
        caps = {n: t["max_workers"] for n, t in types.items() if n != config["head_node_type"]}
        return NodeCaps(config["head_node_type"], caps, config["max_workers"])
    spec = config["spec"].get("rayClusterSpec", config["spec"])

    def node_type(group: dict) -> str:
        return group["template"]["metadata"]["labels"][NODE_TYPE_LABEL]

    caps: dict[str, int] = {}
    for group in spec["workerGroupSpecs"]:  # groups on the same node type share its price
        count = group["maxReplicas"] * group.get("numOfHosts", 1)
        caps[node_type(group)] = caps.get(node_type(group), 0) + count
    return NodeCaps(node_type(spec["headGroupSpec"]), caps, None)


def check_prices(caps: NodeCaps, prices: Mapping[str, float]) -> None:
    """Refuse a cluster with a node type that has no price (caps of 0 included)."""
    missing = sorted({caps.head_type, *caps.worker_caps} - set(prices))
    if missing:
        _fail("prices.toml", f"no price for node type(s) {', '.join(missing)}")


def max_usd_per_hour(caps: NodeCaps, prices: Mapping[str, float]) -> float:
    """Worst case at full scale: the head plus the dearest workers the caps allow."""
    check_prices(caps, prices)
    left = math.inf if caps.max_workers is None else caps.max_workers
    total = prices[caps.head_type]
    for name in sorted(caps.worker_caps, key=lambda n: prices[n], reverse=True):
        count = min(caps.worker_caps[name], left)
        total, left = total + count * prices[name], left - count
    return total
