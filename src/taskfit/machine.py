"""What this process may use of the machine it runs on, for every part that sizes its work by it
(training threads, the llama.cpp engine, bfloat16 products on a CPU)."""

from __future__ import annotations

import functools
import os


def cpu_cores() -> int:
    """The cores this process may run on (its affinity, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# bfloat16 products pay on a CPU only where it multiplies them natively: an AVX512-BF16 CPU did a
# 512 x 576 by 576 x 1536 product 4.4-4.6x faster than in float32 (2026-12-02, two cores), while
# CPUs without it emulate them, about 11x slower. Asked of torch's own CPU check, not timed: every
# process on a machine must decide alike (the server must compute as evaluation did), and a
# 30 ms timing taken while another process loads the cores can fall either side of a threshold.
@functools.lru_cache(maxsize=1)
def cpu_bf16_native() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX tiles), as the CPU
    check of this process's torch (whose oneDNN kernels use them) reports it."""
    import torch

    checks = (getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return any(bool(check()) for check in checks if check is not None)
