"""Peak resident memory per benchmark phase (Linux: VmHWM, resettable through /proc/self/clear_refs).

tracemalloc cannot see Arrow's allocator, so the process high-water mark is the honest number. Where the mark
cannot be reset (non-Linux, restricted /proc) each phase reports the peak so far, and `resettable` says so.
"""
from __future__ import annotations

import resource
import sys


def reset_peak_rss() -> bool:
    """Reset the high-water mark to the current RSS (Linux >= 4.0); False when not possible here."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak RSS since the last reset (or since start), in MiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss   # KiB on Linux, bytes on macOS
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0
