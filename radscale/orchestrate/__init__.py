"""Everything Ray. Ray reads some settings at import time, so they are set here, before any `import ray`."""
import os

if not os.environ.get("RAY_ADDRESS"):
    # A local single-node Ray binds to the machine's network address unless told otherwise (RAY.md);
    # a driver joining a cluster (RAY_ADDRESS set, e.g. under `ray job submit`) keeps Ray's default.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
