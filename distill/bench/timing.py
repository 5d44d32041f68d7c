"""Interleaved timing of competing callables, and latency percentiles.

Reads and writes nothing: it calls the functions it is given and returns seconds.

After warm-up, teacher and student iterations are interleaved until each has min_iters samples and
min_seconds of measured time, so load from other processes hits both models alike and their ratio
stays meaningful.
"""

from __future__ import annotations

import time

import numpy as np

PERCENTILES = (50, 90, 99)


def _timed(fn, sync) -> float:
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def interleaved_timing(fns: dict, *, warmup: int, min_iters: int, min_seconds: float, max_iters: int = 100_000,
                       sync=lambda: None) -> dict[str, list[float]]:
    """Warm up every fn, then alternate them until each has min_iters samples and min_seconds of time."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    while True:
        for key, fn in fns.items():
            samples[key].append(_timed(fn, sync))
        done = all(len(s) >= min_iters and sum(s) >= min_seconds for s in samples.values())
        if done or len(next(iter(samples.values()))) >= max_iters:
            return samples


def percentiles_ms(samples: list[float]) -> dict:
    """p50/p90/p99 and mean of `samples` (seconds) in milliseconds, and the sample count."""
    arr = np.asarray(samples, dtype=np.float64) * 1000.0
    out = {f"p{p}_ms": round(float(np.percentile(arr, p)), 4) for p in PERCENTILES}
    out["mean_ms"] = round(float(arr.mean()), 4)
    out["iters"] = len(samples)
    return out
