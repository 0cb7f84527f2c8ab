"""Latency measurement, side by side in one run (the machine is shared and noisy).

Every contender runs the same input through the same kind of loop; rounds
interleave the contenders so background load hits them alike, and the median
per contender is reported along with ratios to onnxruntime.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from faustgen.ir import BatchLayout
from faustgen.tune.reference import ort_predict, ort_session


def median_us(
    fn: Callable[[], object],
    repeat: int,
    warmup: int = 20,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    for _ in range(warmup):
        fn()
    times = np.empty(repeat)
    for i in range(repeat):
        t0 = clock()
        fn()
        times[i] = clock() - t0
    return float(np.median(times) * 1e6)


def interleaved(
    contenders: dict[str, Callable[[], object]],
    repeat: int = 200,
    rounds: int = 5,
    clock: Callable[[], float] = time.perf_counter,
    warmup: int = 20,
) -> dict[str, float]:
    """Median microseconds per call of each contender, over interleaved rounds.

    clock=time.thread_time measures the CPU time of the calling thread instead of wall
    time: on a shared machine it leaves out the time other processes take (every
    contender here computes in the calling thread: onnxruntime with one intra-op thread,
    the generated C through cffi)."""
    per: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            per[name].append(median_us(fn, repeat, warmup, clock))
    return {k: float(np.median(v)) for k, v in per.items()}


def ort_runner(model_path, x: np.ndarray, layout: BatchLayout):
    """A zero-argument callable running onnxruntime (1 thread) on x."""
    sess = ort_session(model_path, threads=1)
    return lambda: ort_predict(sess, x, layout)


def torch_runner(model, x: np.ndarray):
    import torch

    torch.set_num_threads(1)
    t = torch.from_numpy(np.ascontiguousarray(x))

    def run():
        with torch.no_grad():
            return model(t)

    return run
