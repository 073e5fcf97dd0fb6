"""The data check's inner loops in C (``native.c``): compiled once on this machine with its C
compiler into the user cache, loaded with ctypes, and used by :mod:`taskfit.data.lookalike` where
they give exactly what its numpy code gives (tested side by side). Where no compiler is found, or
``TASKFIT_NATIVE=0`` is set, :func:`library` is None and the numpy code runs: the same results,
slower."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

from taskfit.paths import cache_dir

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("native.c")
FLAGS = ["-O3", "-shared", "-fPIC", "-std=c99"]
# this processor's vector instructions where the compiler knows it, else the architecture's baseline
TUNED = [["-march=native"], []]

_loaded: dict[str, Any] = {}


def _machine() -> str:
    """What the compiled file depends on besides its source: the processor (``-march=native``)."""
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features", "model name")):
                flags += line
    except OSError:
        pass
    return f"{platform.machine()} {flags}"


def _compile(compiler: str, target: Path) -> bool:
    partial = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    failed = ""
    for tuned in TUNED:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            done = subprocess.run([compiler, *FLAGS, *tuned, str(SOURCE), "-o", str(partial)], capture_output=True,
                                  text=True, timeout=120)
        except (OSError, subprocess.SubprocessError) as exc:
            failed = str(exc)
            break
        if done.returncode == 0:
            try:
                os.replace(partial, target)
            except OSError as exc:
                failed = str(exc)
                break
            return True
        failed = f"{compiler} failed: {done.stderr.strip()[-500:]}"
    with contextlib.suppress(OSError):
        partial.unlink(missing_ok=True)
    log.info("no C kernels for the data check (%s): the numpy code runs instead", failed)
    return False


def library() -> Any:
    """The compiled kernels (a ctypes library), or None: no compiler, a failed build, or
    ``TASKFIT_NATIVE=0``. Built at the first call on a machine (about a second) and cached."""
    if os.environ.get("TASKFIT_NATIVE", "1") == "0":
        return None
    if "lib" in _loaded:
        return _loaded["lib"]
    lib = None
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler:
        key = hashlib.sha256(SOURCE.read_bytes() + repr((FLAGS, TUNED)).encode() + _machine().encode()).hexdigest()[:16]
        target = cache_dir() / "native" / f"data-{key}.so"
        if target.exists() or _compile(compiler, target):
            try:
                lib = ctypes.CDLL(str(target))
            except OSError as exc:
                log.info("no C kernels for the data check (%s): the numpy code runs instead", exc)
    if lib is not None:
        p, i64 = ctypes.c_void_p, ctypes.c_int64
        lib.signatures.argtypes = [p, p, i64, i64, p, p, i64, p, p]
        lib.signatures.restype = ctypes.c_int
        lib.candidates.argtypes = [p, i64, i64, p, p, i64, p, i64, p, p, i64, p, i64, i64, p, p, p, i64]
        lib.candidates.restype = i64
        lib.merge.argtypes = [p, p, i64, p, p, i64, i64, p, i64]
        lib.merge.restype = ctypes.c_int
        lib.pending_get.argtypes = [p, i64, p, p, i64, p]
        lib.pending_get.restype = None
        lib.pending_add.argtypes = [p, p, i64, p, p, i64]
        lib.pending_add.restype = i64
        lib.word_digests.argtypes = [p, p, i64, p, i64, p, p, p, p]
        lib.word_digests.restype = None
        lib.pending_sorted.argtypes = [p, p, i64, p, p, i64]
        lib.pending_sorted.restype = i64
        lib.pieces_new.argtypes = [i64]
        lib.pieces_new.restype = p
        lib.pieces_free.argtypes = [p]
        lib.pieces_free.restype = None
        lib.pieces_held.argtypes = [p]
        lib.pieces_held.restype = i64
        lib.pieces_learn.argtypes = [p, p, i64, i64]
        lib.pieces_learn.restype = ctypes.c_int
        lib.pieces_count.argtypes = [p, p, p, i64, p, p, p, p, i64]
        lib.pieces_count.restype = i64
    _loaded["lib"] = lib
    return lib


def ptr(array: Any) -> int:
    """The address of a C-contiguous numpy array's data, for a kernel's argument."""
    assert array.flags.c_contiguous
    return array.ctypes.data
