"""What this process may use of the machine it runs on, for every part that sizes its work by it
(training threads, the llama.cpp engine, training's bfloat16 products on a CPU)."""

from __future__ import annotations

import functools
import os
import time
from typing import Any


def cpu_cores() -> int:
    """The cores this process may run on (its affinity, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# bfloat16 products pay on a CPU only where it multiplies them natively: an AVX512-BF16 / AMX
# CPU did the product below 4.4-4.6x faster than in float32 (2026-12-02, two cores), while CPUs
# without it emulate them, about 11x slower. Measured, not read from CPU flags: the flags do not
# say which kernels this torch build has.
BF16_SPEEDUP_NEEDED = 1.5


@functools.lru_cache(maxsize=1)
def cpu_bf16_speedup() -> float:
    """How many times faster this process's torch multiplies bfloat16 matrices than float32 ones
    on this CPU: one product of the size a small model's layer makes (512 x 576 by 576 x 1536),
    the best of five each (about 30 ms where bfloat16 is native); measured once a process."""
    import torch

    def best(a: Any, b: Any) -> float:
        a @ b
        times = []
        for _ in range(5):
            start = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - start)
        return min(times)

    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(512, 576, generator=generator), torch.randn(576, 1536, generator=generator)
    return best(a, b) / max(best(a.bfloat16(), b.bfloat16()), 1e-9)
