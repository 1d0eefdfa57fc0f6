"""Starting or joining Ray: a local instance on loopback by default, the cluster under `ray job submit`."""
from __future__ import annotations

import logging
import os

import ray
import ray.data


def init_ray(address: str = "", num_cpus: int | None = None) -> None:
    if ray.is_initialized():
        return
    # The sweep prints its own progress; Ray Data's per-operator INFO lines would drown it.
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    ray.data.DataContext.get_current().enable_progress_bars = False
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address or None, logging_level=logging.WARNING, log_to_driver=False)
        return
    env = {k: v for k, v in os.environ.items() if k.startswith(("RAY_", "DS_", "PYTHON", "OMP_", "MKL_"))}
    # address="local": always a fresh instance, never a cluster some other `ray start` left in /tmp/ray.
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False,
             runtime_env={"env_vars": env} if env else None)
