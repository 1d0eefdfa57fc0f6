"""Cluster definitions: Ray's own schema, KubeRay structure, prices and the worst-case $/hour."""

from __future__ import annotations

import copy
import functools
import re
import socket
import tomllib
from pathlib import Path

import pytest
import yaml

from radscale.orchestrate.cluster_config import (
    NODE_TYPE_LABEL,
    ClusterConfigError,
    NodeCaps,
    check_prices,
    load_prices,
    max_usd_per_hour,
    node_caps,
    validate_autoscaler_yaml,
    validate_kuberay_manifest,
)

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
AUTOSCALER = [CLUSTER / "aws.yaml", CLUSTER / "gcp.yaml"]
RAYCLUSTER, RAYJOB = CLUSTER / "kuberay" / "raycluster.yaml", CLUSTER / "kuberay" / "rayjob.yaml"
KUBERAY = [RAYCLUSTER, RAYJOB]
PRICES = CLUSTER / "prices.toml"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Validation must never reach a cloud: any outgoing connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("cluster validation opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _refused(validate, tmp_path: Path, doc: dict, *fragments: str) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    with pytest.raises(ClusterConfigError) as info:
        validate(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path)), message
    for fragment in fragments:
        assert fragment in message, message


# ---------------------------------------------------------------- autoscaler YAMLs


def _role(doc: dict, role: str) -> dict:
    """The first node type of a role: head, gpu or data."""
    types = doc["available_node_types"]
    if role == "head":
        return types[doc["head_node_type"]]
    key = {"gpu": "GPU", "data": "data"}[role]
    return next(t for t in types.values() if t["resources"].get(key, 0) > 0 and t["max_workers"] > 0)


@pytest.mark.parametrize("path", AUTOSCALER, ids=lambda p: p.name)
def test_autoscaler_yaml_passes_ray_schema(path):
    config = validate_autoscaler_yaml(path)
    assert config["available_node_types"][config["head_node_type"]]["resources"]["GPU"] == 0
    assert config["file_mounts"] == {} and 0 < config["idle_timeout_minutes"] <= 15
    assert "--num-gpus=0" in " ".join(config["head_start_ray_commands"])
    assert "2.60.0" in config["docker"]["image"]
    for name, node in config["available_node_types"].items():
        if node["resources"].get("GPU"):
            assert any(k.startswith("accelerator_type:") for k in node["resources"]), name


def _set_data(value):
    return lambda d: _role(d, "data")["resources"].__setitem__("data", value)


def _min_above_max(doc: dict) -> None:
    node = _role(doc, "data")
    node["min_workers"] = node["max_workers"] + 1


def _min_above_global(doc: dict) -> None:
    _role(doc, "data")["min_workers"] = 1
    doc["max_workers"] = 0


def _drop_gpus(doc: dict) -> None:
    for node in doc["available_node_types"].values():
        if node["resources"].get("GPU"):
            del node["resources"]["GPU"]


AUTOSCALER_BREAKS = {
    "custom resource 1.5": (_set_data(1.5), "Ray schema", "resources.data"),
    "custom resource '1'": (_set_data("1"), "Ray schema"),
    "custom resource 1.0": (_set_data(1.0), "resources.data"),
    "missing head_node_type": (lambda d: d.pop("head_node_type"), "head_node_type"),
    "unknown head_node_type": (lambda d: d.__setitem__("head_node_type", "nope"), "head_node_type"),
    "min_workers > max_workers": (_min_above_max, "min_workers", "> max_workers"),
    "per-type max_workers missing": (lambda d: _role(d, "data").pop("max_workers"), "max_workers"),
    "sum(min_workers) > global max": (_min_above_global, "Ray rejected", "max_workers"),
    "head without GPU: 0": (lambda d: _role(d, "head")["resources"].pop("GPU"), "GPU: 0"),
    "head with GPUs": (lambda d: _role(d, "head")["resources"].__setitem__("GPU", 8), "GPU: 0"),
    "setup_commands from defaults": (lambda d: d.pop("setup_commands"), "setup_commands"),
    "unknown top-level key": (lambda d: d.__setitem__("workers", 3), "Ray schema", "'workers'"),
    "unpinned image": (lambda d: d["docker"].__setitem__("image", "rayproject/ray:latest"), "docker.image"),
    "no GPU node type": (_drop_gpus, "GPU node type"),
    "no idle timeout": (lambda d: d.__setitem__("idle_timeout_minutes", 0), "idle_timeout_minutes"),
    "kuberay provider": (lambda d: d["provider"].__setitem__("type", "kuberay"), "provider.type"),
}


@pytest.mark.parametrize("path", AUTOSCALER, ids=lambda p: p.name)
@pytest.mark.parametrize("case", AUTOSCALER_BREAKS, ids=str)
def test_autoscaler_yaml_broken_copies_refused(path, case, tmp_path):
    doc = _load(path)
    AUTOSCALER_BREAKS[case][0](doc)
    _refused(validate_autoscaler_yaml, tmp_path, doc, *AUTOSCALER_BREAKS[case][1:])


@pytest.mark.parametrize("path", AUTOSCALER, ids=lambda p: p.name)
def test_autoscaler_picks_spot_first_then_on_demand(path):
    """The YAML comments' claim, checked against Ray 2.60's own v1 scheduler."""
    from ray.autoscaler._private.node_provider_availability_tracker import NodeAvailabilitySummary
    from ray.autoscaler._private.resource_demand_scheduler import _default_utilization_scorer, get_nodes_for

    config = validate_autoscaler_yaml(path)
    types, head = config["available_node_types"], config["head_node_type"]
    scorer = functools.partial(
        _default_utilization_scorer, node_availability_summary=NodeAvailabilitySummary(node_availabilities={})
    )
    trial = [{"GPU": 1, "CPU": 8}] * 8  # one 8-GPU paper trial
    spot = next(n for n in types if n.endswith("-spot") and types[n]["resources"].get("GPU"))
    first, _ = get_nodes_for(types, {}, head, 10, trial, scorer)
    assert dict(first) == {spot: 1}
    later, _ = get_nodes_for(types, {spot: types[spot]["max_workers"]}, head, 10, trial, scorer)
    assert dict(later) == {spot.removesuffix("-spot"): 1}
    ingest, _ = get_nodes_for(types, {}, head, 10, [{"CPU": 1, "data": 0.001}], scorer)
    assert dict(ingest) == {f"{path.stem}-data-spot": 1}


def _requirement_pins(text: str) -> dict[str, str]:
    pins = re.findall(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([^\s\"']+)", text)
    return {name.lower().replace("_", "-"): version for name, version in pins}


@pytest.mark.parametrize("path", AUTOSCALER, ids=lambda p: p.name)
def test_setup_commands_pin_requirements(path):
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    required = _requirement_pins("\n".join(line for line in lines if not line.startswith("#")))
    required.pop("pytest", None)  # test-only
    installed = _requirement_pins(" ".join(_load(path)["setup_commands"]))
    lacking = sorted(f"{n}=={v}" for n, v in required.items() if installed.get(n) != v)
    extra = sorted(f"{n}=={v}" for n, v in installed.items() if required.get(n) != v)
    assert not lacking and not extra, f"{path.name} setup_commands lack {lacking}, differ/extra {extra}"


# ---------------------------------------------------------------- KubeRay manifests


def _spec(doc: dict) -> dict:
    return doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]


def _group(doc: dict, gpu: bool) -> dict:
    for group in _spec(doc)["workerGroupSpecs"]:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        if ("nvidia.com/gpu" in limits) == gpu:
            return group
    raise LookupError


def _container(group: dict) -> dict:
    return group["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("path", KUBERAY, ids=lambda p: p.name)
def test_kuberay_manifest_passes(path):
    doc = validate_kuberay_manifest(path)
    assert _spec(doc)["headGroupSpec"]["rayStartParams"]["num-gpus"] == "0"
    assert _spec(doc)["enableInTreeAutoscaling"] is True
    assert _group(doc, gpu=True)["minReplicas"] == 0 and _group(doc, gpu=False)["resources"]["data"] == "1"


@pytest.mark.parametrize("path", KUBERAY, ids=lambda p: p.name)
def test_kuberay_ray_node_labels_parse_with_rays_own_parser(path):
    """`ray start --labels` receives rayStartParams.labels: Ray's parser and validator must accept it, and the
    label it yields is the one the cost tracker reads (orchestrate/cost.node_type)."""
    from ray._private.label_utils import parse_node_labels_string, validate_node_labels

    from radscale.orchestrate.cost import node_type

    spec = _spec(_load(path))
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        labels = parse_node_labels_string(group["rayStartParams"]["labels"])
        validate_node_labels(labels)
        assert node_type({"Labels": labels}) == group["template"]["metadata"]["labels"][NODE_TYPE_LABEL]


def test_rayjob_runs_the_paper_sweep_and_matches_raycluster():
    job = validate_kuberay_manifest(RAYJOB)["spec"]
    assert job["entrypoint"].endswith("radscale sweep jobs/paper.toml")
    assert "MLFLOW_TRACKING_URI" in yaml.safe_load(job["runtimeEnvYAML"])["env_vars"]
    assert job["shutdownAfterJobFinishes"] is True and job["activeDeadlineSeconds"] > 0
    assert job["rayClusterSpec"] == _load(RAYCLUSTER)["spec"]  # one cluster shape, one cost bound


def _head(doc: dict) -> dict:
    return _spec(doc)["headGroupSpec"]


def _gpu_resources(doc: dict) -> dict:
    return _container(_group(doc, gpu=True))["resources"]


def _no_gpu_group(doc: dict) -> None:
    resources = _gpu_resources(doc)
    for side in ("limits", "requests"):
        resources[side].pop("nvidia.com/gpu")


def _head_gpu(doc: dict) -> None:
    _container(_head(doc))["resources"]["limits"]["nvidia.com/gpu"] = "1"


def _quoted_resources(doc: dict) -> None:
    group = _group(doc, gpu=False)
    del group["resources"]
    group["rayStartParams"]["resources"] = '"{\\"data\\": 1.5}"'  # KubeRay's quoted JSON form


KUBERAY_BREAKS = {
    "apiVersion v1alpha1": (lambda d: d.__setitem__("apiVersion", "ray.io/v1alpha1"), "apiVersion"),
    "kind RayService": (lambda d: d.__setitem__("kind", "RayService"), "kind"),
    "minReplicas > replicas": (lambda d: _group(d, True).update(minReplicas=1, replicas=0), "minReplicas <="),
    "replicas > maxReplicas": (lambda d: _group(d, True).update(replicas=9), "replicas <= maxReplicas"),
    "maxReplicas missing": (lambda d: _group(d, True).pop("maxReplicas"), "maxReplicas"),
    "rayStartParams missing": (lambda d: _group(d, False).pop("rayStartParams"), "rayStartParams"),
    "rayStartParams not a string": (lambda d: _head(d)["rayStartParams"].update({"num-cpus": 8}), "string"),
    "image missing": (lambda d: _container(_group(d, True)).pop("image"), "image"),
    "no GPU group": (_no_gpu_group, "no worker group with nvidia.com/gpu"),
    "GPU request != limit": (lambda d: _gpu_resources(d)["requests"].update({"nvidia.com/gpu": "4"}),
                             "requests.nvidia.com/gpu"),
    "head num-gpus 1": (lambda d: _head(d)["rayStartParams"].update({"num-gpus": "1"}), "num-gpus"),
    "head holds a GPU": (_head_gpu, "head must not hold GPUs"),
    "autoscaling off": (lambda d: _spec(d).update(enableInTreeAutoscaling=False), "enableInTreeAutoscaling"),
    "no idleTimeoutSeconds": (lambda d: _spec(d)["autoscalerOptions"].pop("idleTimeoutSeconds"),
                              "idleTimeoutSeconds"),
    "group idle timeout on v1": (lambda d: _spec(d)["autoscalerOptions"].pop("version"), "version: v2"),
    "resources set twice": (lambda d: _group(d, False)["rayStartParams"].update(memory="9"), "not both"),
    "custom resource 0.5": (lambda d: _group(d, False)["resources"].update(data="0.5"), "whole numbers"),
    "quoted custom resource 1.5": (_quoted_resources, "whole numbers"),
    "no node-type label": (lambda d: _group(d, True)["template"]["metadata"].pop("labels"), NODE_TYPE_LABEL),
    "no Ray node label": (lambda d: _group(d, True)["rayStartParams"].pop("labels"), "rayStartParams.labels"),
    "Ray label != pod label": (lambda d: _group(d, False)["rayStartParams"].update(
        labels=f"{NODE_TYPE_LABEL}=aws-gpu-p5"), "rayStartParams.labels"),
    "duplicate groupName": (lambda d: _group(d, False).update(groupName=_group(d, True)["groupName"]),
                            "groupName"),
}


@pytest.mark.parametrize("path", KUBERAY, ids=lambda p: p.name)
@pytest.mark.parametrize("case", KUBERAY_BREAKS, ids=str)
def test_kuberay_broken_copies_refused(path, case, tmp_path):
    doc = _load(path)
    KUBERAY_BREAKS[case][0](doc)
    _refused(validate_kuberay_manifest, tmp_path, doc, *KUBERAY_BREAKS[case][1:])


RAYJOB_BREAKS = {
    "runtimeEnvYAML not YAML": (lambda s: s.update(runtimeEnvYAML="env_vars: [unclosed"), "runtimeEnvYAML"),
    "runtimeEnvYAML a list": (lambda s: s.update(runtimeEnvYAML="- pip"), "YAML mapping"),
    "local working_dir": (lambda s: s.update(runtimeEnvYAML="working_dir: ."), "remote URI"),
    "env var not a string": (lambda s: s.update(runtimeEnvYAML="env_vars: {N: 1}"), "env_vars.N"),
    "keeps the cluster": (lambda s: s.update(shutdownAfterJobFinishes=False), "shutdownAfterJobFinishes"),
    "no hard deadline": (lambda s: s.pop("activeDeadlineSeconds"), "activeDeadlineSeconds"),
    "zero deadline": (lambda s: s.update(activeDeadlineSeconds=0), "activeDeadlineSeconds"),
    "no ttl": (lambda s: s.pop("ttlSecondsAfterFinished"), "ttlSecondsAfterFinished"),
    "empty entrypoint": (lambda s: s.update(entrypoint=" "), "entrypoint"),
}


@pytest.mark.parametrize("case", RAYJOB_BREAKS, ids=str)
def test_rayjob_broken_copies_refused(case, tmp_path):
    doc = _load(RAYJOB)
    RAYJOB_BREAKS[case][0](doc["spec"])
    _refused(validate_kuberay_manifest, tmp_path, doc, *RAYJOB_BREAKS[case][1:])


# ---------------------------------------------------------------- prices and cost bound


def _all_caps() -> dict[str, NodeCaps]:
    configs = {p.name: validate_autoscaler_yaml(p) for p in AUTOSCALER}
    configs.update({p.name: validate_kuberay_manifest(p) for p in KUBERAY})
    return {name: node_caps(config) for name, config in configs.items()}


def test_every_node_type_has_a_price_and_every_price_a_node_type():
    prices, caps = load_prices(PRICES), _all_caps()
    for cap in caps.values():
        check_prices(cap, prices)
    used = {t for cap in caps.values() for t in (cap.head_type, *cap.worker_caps)}
    assert used == set(prices)


def test_price_markets_match_the_node_configs():
    table = tomllib.loads(PRICES.read_text())
    for path in AUTOSCALER:
        for name, node in _load(path)["available_node_types"].items():
            config = node["node_config"]
            scheduling = config.get("scheduling", {})
            spot = "InstanceMarketOptions" in config or scheduling.get("provisioningModel") == "SPOT"
            assert (table[name]["market"] == "spot") == spot == name.endswith("-spot"), name
            assert table[name]["instance"] == config.get("InstanceType", config.get("machineType")), name


def test_every_price_cites_a_dated_source():
    lines = [l for l in PRICES.read_text().splitlines() if re.match(r"(on_demand_)?usd_per_hour\s*=", l)]
    assert lines and all(re.search(r"#.*\S.*\b20\d\d\b", l) or "# as [" in l for l in lines)


def test_unpriced_node_type_refused():
    prices = load_prices(PRICES)
    prices.pop("aws-gpu-p5")
    with pytest.raises(ClusterConfigError, match="no price for node type.*aws-gpu-p5"):
        max_usd_per_hour(_all_caps()["aws.yaml"], prices)


@pytest.mark.parametrize(
    "entry,fragment",
    [
        ('instance = "x"\nmarket = "on-demand"\nusd_per_hour = -1.0', "positive"),
        ('instance = "x"\nmarket = "on-demand"\nusd_per_hour = nan', "positive"),
        ('instance = "x"\nmarket = "spot"\nusd_per_hour = 5.0\non_demand_usd_per_hour = 4.0', "ceiling"),
        ('instance = "x"\nmarket = "spot"\nusd_per_hour = 5.0', "on_demand_usd_per_hour"),
        ('instance = "x"\nusd_per_hour = 5.0', "market"),
    ],
)
def test_bad_price_entries_refused(entry, fragment, tmp_path):
    path = tmp_path / "prices.toml"
    path.write_text(f"[aws-head]\n{entry}\n")
    with pytest.raises(ClusterConfigError, match=fragment):
        load_prices(path)


def test_max_cost_fills_the_dearest_nodes_up_to_the_global_cap():
    prices = {"head": 1.0, "big": 10.0, "small": 5.0, "off": 99.0}
    caps = NodeCaps("head", {"big": 2, "small": 5, "off": 0}, max_workers=3)
    assert max_usd_per_hour(caps, prices) == 1.0 + 2 * 10.0 + 5.0
    assert max_usd_per_hour(NodeCaps("head", caps.worker_caps, None), prices) == 1.0 + 20.0 + 25.0


def test_readme_prints_the_computed_worst_case():
    readme = (CLUSTER / "README.md").read_text()
    listed, ceiling = load_prices(PRICES), load_prices(PRICES, ceiling=True)
    for name, caps in _all_caps().items():
        low, high = max_usd_per_hour(caps, listed), max_usd_per_hour(caps, ceiling)
        assert 0 < low <= high < 1e4
        rows = [line for line in readme.splitlines() if line.startswith(f"| `{name}`") and "$" in line]
        assert len(rows) == 1 and f"${low:,.2f}" in rows[0] and f"${high:,.2f}" in rows[0], (name, rows)
    deadline_h = _load(RAYJOB)["spec"]["activeDeadlineSeconds"] / 3600
    spend = max_usd_per_hour(_all_caps()["rayjob.yaml"], ceiling) * deadline_h
    assert f"${spend:,.0f}" in readme
