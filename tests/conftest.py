import os

# Tests never talk to anything but loopback; Ray single-node stays on 127.0.0.1 (RAY.md).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
