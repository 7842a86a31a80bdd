"""The default torch CPU thread count: the cores this process may use that other work is not already using.

Measured (``benchmarks/threads.py``, results in ``benchmarks/results/threads``): on a 2-core machine with one other
busy process, 2 torch threads ran a training step 2.5x slower than 1 thread (the threads wait on each other at every
parallel region while one of them is descheduled), so the cores that other runnable tasks occupy right now are
left out. "Right now" is the kernel's count of runnable tasks (``procs_running`` in ``/proc/stat``, sampled a few
times), not the load average: that lags by a minute and still counts a job that just ended.
"""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import time

_logger = logging.getLogger(__name__)


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity; all CPUs where affinity is not supported)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def busy_cores(samples: int = 5, interval: float = 0.02) -> float:
    """Other runnable tasks right now: the median of ``procs_running`` over a few samples, minus this process's
    reading thread; the 1-minute load average where ``/proc/stat`` is not available."""
    counts = []
    for i in range(samples):
        try:
            with open("/proc/stat") as f:
                line = next((ln for ln in f if ln.startswith("procs_running")), None)
        except OSError:
            line = None
        if line is None:
            try:
                return os.getloadavg()[0]
            except (AttributeError, OSError):
                return 0.0
        counts.append(int(line.split()[1]) - 1)
        if i + 1 < samples:
            time.sleep(interval)
    return max(0.0, statistics.median(counts))


def default_threads(busy: float | None = None) -> int:
    """``OMP_NUM_THREADS`` when set; else the available cores minus the :func:`busy_cores` (rounded), at least 1.
    ``busy`` overrides the measurement (for tests)."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    cores = available_cores()
    busy = busy_cores() if busy is None else busy
    n = max(1, min(cores, int(cores - busy + 0.5)))
    if n < cores:
        _logger.info("using %d of %d cores: %.1f are busy with other work (set --threads to override)", n, cores, busy)
    return n


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run the block with ``n`` torch CPU threads (``None`` / 0: as they are), restoring the count afterwards."""
    import torch

    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
