"""Benchmarks: radscale paths side by side with bare PyTorch baselines; each prints one JSON line."""
