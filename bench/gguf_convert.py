"""The embedded model's one-time conversion (GGUF to a float32 safetensors copy), as taskfit does
it against transformers' loaders called as they are, each side in its own fresh process and
cache directory, in turns.

    .venv/bin/python bench/gguf_convert.py --repeat 2

"taskfit" is :func:`taskfit.models.registry._convert_gguf` (the file parsed once, gguf's
tensor-name map built once); "transformers as called" is the same function with
``_one_parse`` replaced by a context that does nothing, which is how the conversion ran before.
Each side prints its wall-clock seconds; the copies it writes are compared tensor by tensor
(they must be identical), and the ratio of the fastest times is printed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import contextlib, sys, time
from pathlib import Path
from taskfit.models import registry
if sys.argv[2] == "plain":
    registry._one_parse = contextlib.nullcontext
info = registry.resolve("smollm2-135m")
start = time.perf_counter()
registry._convert_gguf(info, Path(sys.argv[1]))
print(time.perf_counter() - start)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    from safetensors.torch import load_file

    times: dict[str, list[float]] = {"taskfit": [], "transformers as called": []}
    copies: dict[str, Path] = {}
    for rep in range(args.repeat):
        for side, flag in (("taskfit", "once"), ("transformers as called", "plain"))[:: 1 if rep % 2 == 0 else -1]:
            target = Path(tempfile.mkdtemp()) / "copy"
            out = subprocess.run([sys.executable, "-c", CHILD, str(target), flag], capture_output=True, text=True,
                                 check=True).stdout.split()
            times[side].append(float(out[-1]))
            copies[side] = target
            print(f"{side}: {times[side][-1]:.1f} s", flush=True)
    a, b = (load_file(next(copies[s].glob("*.safetensors"))) for s in times)
    same = a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    fast, slow = (min(v) for v in times.values())
    print(f"fastest: taskfit {fast:.1f} s, transformers as called {slow:.1f} s: {fast / slow:.2f}x the time; "
          f"identical copies: {same}")


if __name__ == "__main__":
    main()
