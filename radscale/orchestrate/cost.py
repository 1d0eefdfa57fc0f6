"""The driver-side cost bound of a sweep (docs RAY.md, "Cost bound"; the layers before it are the cluster's node
caps, trial concurrency and the in-loop budget).

- `PriceBook`: $/node-hour per node type (cluster/prices.toml via `cluster_config.load_prices`, an inline table,
  a default for nodes of unknown type).
- `SpendTracker`: spend = node-hours x price, integrated over polls of the cluster's alive nodes. It errs high:
  a node seen at a poll is charged for the whole interval since the previous poll, and a node gone since then
  is charged for it too (it lived part of it).
- `CostGuard`: before each trial, admit it only if spend + what running trials are still projected to cost +
  its own projection fit in the bound; `halt` (bound reached, or a stop requested) refuses every further trial.
- `StopSignal`: a file in the sweep's Ray storage. Rank 0 of every running trial polls it and turns it into
  the collective stop flag of its loop, so the loop ends cleanly with a checkpoint (the trial can resume later).
- `CostMonitor`: the thread that polls the nodes, keeps spend.json current and raises the stop signal.
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from radscale.config.specs import JobSpec
from radscale.errors import RadscaleError
from radscale.orchestrate.cluster_config import (
    NODE_TYPE_LABEL, ClusterConfigError, check_prices, load_prices, max_usd_per_hour, node_caps,
    validate_autoscaler_yaml, validate_kuberay_manifest,
)

NODE_GROUP_LABEL = "ray.io/node-group"   # set by Ray from RAY_NODE_TYPE_NAME (launcher + autoscaler v2: type name)

Node = tuple[str, str]                   # (node id, node type; "" = unknown)


# ---------------------------------------------------------------- prices and projections


@dataclass(frozen=True)
class PriceBook:
    prices: Mapping[str, float]          # node type -> US$ per node-hour
    default: float                       # a node of unknown or unpriced type
    worst_case_usd_per_hour: float = 0.0  # head + capped workers of the named cluster config (0 = none named)

    def price(self, node_type: str) -> float:
        return self.prices.get(node_type, self.default)


@dataclass(frozen=True)
class TrialCost:
    """Projected cost of one trial: (training time + startup overhead) x the rate one running trial adds."""
    seconds: float
    usd_per_hour: float

    @property
    def usd(self) -> float:
        return self.seconds / 3600.0 * self.usd_per_hour


def _cluster_caps(path: Path):
    import yaml

    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise RadscaleError(f"cost.cluster: {path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError:
        doc = None                      # the validator below names the problem
    if isinstance(doc, dict) and "apiVersion" in doc:
        return node_caps(validate_kuberay_manifest(path))
    return node_caps(validate_autoscaler_yaml(path))


def _prices_file(cost, cluster: Path | None) -> Path | None:
    if cost.prices:
        return Path(cost.prices).expanduser()
    if cluster is None:
        return None
    for folder in (cluster.parent, cluster.parent.parent):   # cluster/aws.yaml, cluster/kuberay/rayjob.yaml
        if (folder / "prices.toml").exists():
            return folder / "prices.toml"
    raise RadscaleError(f"cost.cluster: {cluster}: no prices.toml beside it; set cost.prices")


def load_price_book(job: JobSpec) -> PriceBook:
    """Prices for this job; with `cost.cluster` named, every node type of that config must have one."""
    cost = job.cost
    cluster = Path(cost.cluster).expanduser() if cost.cluster else None
    path = _prices_file(cost, cluster)
    if path is not None and not path.exists():
        raise RadscaleError(f"cost.prices: {path}: file not found")
    try:
        prices = load_prices(path, ceiling=cost.spot_at_ceiling) if path is not None else {}
        prices.update(cost.node_prices)
        worst = 0.0
        if cluster is not None:
            caps = _cluster_caps(cluster)
            check_prices(caps, prices)
            worst = max_usd_per_hour(caps, prices)
    except ClusterConfigError as err:   # a ValueError; the CLI prints RadscaleErrors as one line
        raise RadscaleError(f"cost: {err}") from None
    default = cost.default_node_usd_per_hour or job.hardware.node_price_per_hour
    if cost.budget_usd and not prices and default <= 0:
        # every node would be priced at $0: measured spend never grows and the bound admits every trial
        raise RadscaleError("cost.budget_usd is set but no node has a price: set cost.prices or cost.cluster "
                            "(prices.toml), cost.node_prices or cost.default_node_usd_per_hour")
    return PriceBook(prices, default, worst)


def project_trial_cost(job: JobSpec) -> TrialCost:
    """What starting one more trial commits: its training time plus `startup_overhead_s`, at the trial rate."""
    cost, budget, hw = job.cost, job.budget, job.hardware
    train_s = cost.expected_trial_s
    if not train_s and budget.mode == "seconds":
        train_s = budget.value
    elif not train_s and budget.mode == "gpu_hours":   # device-hours over the trial's devices
        train_s = budget.value * 3600.0 / max(1, hw.num_workers)
    rate = cost.trial_usd_per_hour or hw.num_workers * hw.node_price_per_hour
    if cost.budget_usd and rate <= 0:
        raise RadscaleError("cost.budget_usd is set but a trial has no price: set cost.trial_usd_per_hour or "
                            "hardware.node_price_per_hour")
    return TrialCost(train_s + cost.startup_overhead_s, rate)


def node_type(node: Mapping) -> str:
    """radscale's own label first (KubeRay pods: RAY_OVERRIDE_LABELS), then Ray's node group (launcher)."""
    labels = node.get("Labels") or {}
    return str(labels.get(NODE_TYPE_LABEL) or labels.get(NODE_GROUP_LABEL) or "")


def alive_ray_nodes() -> list[Node]:
    import ray

    return [(n["NodeID"], node_type(n)) for n in ray.nodes() if n.get("Alive")]


# ---------------------------------------------------------------- spend


class SpendTracker:
    """Integrates node-hours x price over polls; thread-safe (the monitor polls, the Tune searcher reads)."""

    def __init__(self, book: PriceBook, *, spent_usd: float = 0.0, node_hours: float = 0.0,
                 by_type: Mapping[str, Mapping[str, float]] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.book = book
        self._clock = clock
        self._lock = threading.Lock()
        self._spent = spent_usd
        self._hours = node_hours
        self._by_type = {k: dict(v) for k, v in (by_type or {}).items()}
        self._last: float | None = None
        self._seen: dict[str, str] = {}

    def poll(self, nodes: Iterable[Node]) -> None:
        now = self._clock()
        nodes = dict(nodes)
        with self._lock:
            dt_h = 0.0 if self._last is None else (now - self._last) / 3600.0
            charged = {**self._seen, **nodes}   # alive now, or alive at the previous poll and gone since
            for ntype in charged.values():
                price = self.book.price(ntype)
                self._spent += dt_h * price
                self._hours += dt_h
                entry = self._by_type.setdefault(ntype or "unknown", {"node_hours": 0.0, "usd": 0.0})
                entry["node_hours"] += dt_h
                entry["usd"] += dt_h * price
            self._last, self._seen = now, nodes

    @property
    def spent_usd(self) -> float:
        with self._lock:
            return self._spent

    def snapshot(self) -> dict:
        with self._lock:
            return {"spent_usd": self._spent, "node_hours": self._hours, "alive_nodes": len(self._seen),
                    "by_node_type": {k: dict(v) for k, v in sorted(self._by_type.items())}}


# ---------------------------------------------------------------- admission


@dataclass(frozen=True)
class Admission:
    admitted: bool
    message: str                        # one line; empty when admitted
    final: bool = False                 # refused for good (halted, or nothing running that could free room)


@dataclass
class CostGuard:
    budget_usd: float                   # 0 = unbounded
    trial: TrialCost
    tracker: SpendTracker
    clock: Callable[[], float] = time.monotonic
    halted: str = ""                    # reason every further trial is refused
    _running: dict[str, float] = field(default_factory=dict)   # trial id -> start time
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def committed_usd(self) -> float:
        """What running trials are still projected to cost (their projection minus their time so far)."""
        now = self.clock()
        with self._lock:
            ages = list(self._running.values())
        return sum(max(0.0, self.trial.usd - (now - t0) / 3600.0 * self.trial.usd_per_hour) for t0 in ages)

    def admit(self, trial_id: str) -> Admission:
        if self.halted:
            return Admission(False, f"skipped: {self.halted}", final=True)
        if self.budget_usd:
            spent, committed = self.tracker.spent_usd, self.committed_usd()
            if spent + committed + self.trial.usd > self.budget_usd:
                with self._lock:
                    running = bool(self._running)
                return Admission(False, f"skipped: over cost budget (spent ${spent:.2f} + running ${committed:.2f}"
                                        f" + this trial ${self.trial.usd:.2f} > ${self.budget_usd:.2f})",
                                 final=not running)
        with self._lock:
            self._running[trial_id] = self.clock()
        return Admission(True, "")

    def release(self, trial_id: str) -> None:
        with self._lock:
            self._running.pop(trial_id, None)

    def over_budget(self) -> bool:
        return bool(self.budget_usd) and self.tracker.spent_usd >= self.budget_usd

    def halt(self, reason: str) -> None:
        self.halted = self.halted or reason


# ---------------------------------------------------------------- stop signal


def _fs(uri: str):
    import pyarrow.fs as pafs

    if "://" not in uri:
        return pafs.LocalFileSystem(), str(Path(uri).resolve())
    return pafs.FileSystem.from_uri(uri)


@dataclass(frozen=True)
class StopSignal:
    """A file whose presence tells running trials to end now; a local path or an s3://, gs:// URI."""
    uri: str

    @classmethod
    def for_sweep(cls, storage: str, sweep: str) -> "StopSignal":
        return cls(f"{storage.rstrip('/')}/{sweep}.stop")

    def reason(self) -> str | None:
        """None when not raised; else the reason written with it ('' if the file is empty or not JSON)."""
        import pyarrow.fs as pafs

        fs, path = _fs(self.uri)
        if fs.get_file_info(path).type == pafs.FileType.NotFound:
            return None
        try:
            with fs.open_input_stream(path) as f:
                return str(json.loads(f.read().decode() or "{}").get("reason", ""))
        except (OSError, ValueError, AttributeError):
            return ""

    def raise_(self, reason: str) -> None:
        fs, path = _fs(self.uri)
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(path) as f:
            f.write(json.dumps({"reason": reason, "at": time.strftime("%Y-%m-%dT%H:%M:%S")}).encode())

    def clear(self) -> None:
        import pyarrow.fs as pafs

        fs, path = _fs(self.uri)
        if fs.get_file_info(path).type != pafs.FileType.NotFound:
            fs.delete_file(path)


# ---------------------------------------------------------------- the monitor


class CostMonitor:
    """Polls the nodes every `every_s` from a daemon thread, keeps `spend_path` current (it survives a killed
    driver), halts the guard and raises the stop signal once the bound is reached or a stop is requested."""

    def __init__(self, guard: CostGuard, stop: StopSignal, spend_path: Path, every_s: float,
                 list_nodes: Callable[[], list[Node]] = alive_ray_nodes,
                 echo: Callable[[str], None] = print):
        self.guard, self.stop, self.spend_path = guard, stop, Path(spend_path)
        self.every_s = every_s
        self._list_nodes, self._echo = list_nodes, echo
        self.skipped: dict[str, str] = {}
        self.stopped: dict[str, str] = {}
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stop_raised = False      # the stop file was written (running trials were told)

    def start(self) -> "CostMonitor":
        self.poll()
        self._thread = threading.Thread(target=self._run, name="radscale-cost", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._wake.wait(self.every_s):
            try:
                self.poll()
            except Exception as err:   # a flaky GCS call must not kill the bound; the next poll retries
                self._echo(f"radscale: cost: poll failed ({type(err).__name__}); retrying in {self.every_s:g} s")

    def poll(self) -> None:
        self.guard.tracker.poll(self._list_nodes())
        if self.guard.over_budget() and not self._stop_raised:
            spent = self.guard.tracker.spent_usd
            reason = f"cost budget reached (spent ${spent:.2f} >= ${self.guard.budget_usd:.2f})"
            self.guard.halt(reason)       # no new trial starts, even while the stop file cannot be written
            self.stop.raise_(reason)      # raises on a storage error: the next poll writes it again
            self._stop_raised = True
            self._echo(f"radscale: cost: {reason}; running trials end at their next report, no new trial starts")
        elif not self.guard.halted:
            requested = self.stop.reason()
            if requested is not None:
                self.guard.halt(f"stop requested ({requested or self.stop.uri})")
        self.write()

    def close(self) -> dict:
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.poll()
        return self.summary()

    def summary(self) -> dict:
        g = self.guard
        return {**g.tracker.snapshot(), "budget_usd": g.budget_usd, "trial_projection_usd": g.trial.usd,
                "trial_projection_s": g.trial.seconds, "trial_usd_per_hour": g.trial.usd_per_hour,
                "worst_case_usd_per_hour": g.tracker.book.worst_case_usd_per_hour, "halted": g.halted,
                "skipped": dict(self.skipped), "stopped": dict(self.stopped),
                "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}

    def write(self) -> None:
        self.spend_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.spend_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.summary(), indent=2))
        tmp.replace(self.spend_path)


def read_spend(path: Path) -> dict:
    """The spend.json of an earlier run of this sweep, so spend accumulates across re-runs."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def over_bound_note(budget_usd: float, spent_usd: float, n_trials: int, trial: TrialCost) -> str | None:
    """Said before training when the trials to train project over the bound: the guard will run what fits
    (in sweep order) and skip the rest, so the user learns it now, not hours later."""
    projected = n_trials * trial.usd
    if not budget_usd or not n_trials or spent_usd + projected <= budget_usd:
        return None
    fits = max(0, int((budget_usd - spent_usd) // trial.usd))   # > 0: a bound needs a trial price
    return (f"radscale: cost: {n_trials} trial(s) to train project ${projected:.2f} (+ ${spent_usd:.2f} spent) "
            f"over the ${budget_usd:.2f} bound: about {fits} can run, the rest will be skipped (raise "
            "cost.budget_usd to run them all)")


@dataclass(frozen=True)
class CostPlan:
    book: PriceBook
    trial: TrialCost


def check_cost(job: JobSpec) -> CostPlan:
    """Prices and the trial projection, or the cost settings' one-line error (prices file, cluster node types, a
    bound without prices), before any compute; the sweep's cost monitor is built on the same plan."""
    return CostPlan(load_price_book(job), project_trial_cost(job))


def build_cost_monitor(job: JobSpec, storage: str, spend_path: Path,
                       echo: Callable[[str], None] = print,
                       list_nodes: Callable[[], list[Node]] = alive_ray_nodes,
                       plan: CostPlan | None = None) -> CostMonitor:
    """Prices, projection (`plan`, else check_cost) and the spend so far (earlier runs of this sweep included); a
    stop signal left by an earlier run is cleared; the monitor is started."""
    plan = plan or check_cost(job)
    before = read_spend(spend_path)
    tracker = SpendTracker(plan.book, spent_usd=float(before.get("spent_usd", 0.0)),
                           node_hours=float(before.get("node_hours", 0.0)), by_type=before.get("by_node_type"))
    guard = CostGuard(job.cost.budget_usd, plan.trial, tracker)
    stop = StopSignal.for_sweep(storage, job.sweep.name)
    stop.clear()        # left by an earlier run: it must not halt this one or end the trials it resumes
    return CostMonitor(guard, stop, spend_path, job.cost.poll_s, list_nodes, echo).start()
