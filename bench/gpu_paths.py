"""taskfit's CUDA paths on one GPU, through the CLI a user types: bf16 LoRA, QLoRA, full
fine-tuning and the classification head trained (`taskfit train`) and evaluated (`taskfit eval`,
`taskfit compare`) on the quickstart's tickets.

    python bench/gpu_paths.py --out DIR                      # the embedded model
    python bench/gpu_paths.py --model PATH --out DIR         # any local model directory
    python bench/gpu_paths.py --shape-of DIR --out DIR       # random weights in DIR's shape

``--shape-of`` builds a model with random weights from the ``config.json`` and tokenizer files in
DIR (the converted embedded model's cache folder holds them): the same layers, sizes and
vocabulary, so its throughput and memory are the real model's, where the weights cannot travel to
the GPU machine. Its accuracy then says only that training moved it, not what the real model
reaches. Each method trains in its own ``taskfit train`` process, one after the other, and prints
its tokens/s and the GPU's peak memory from the run's metrics (``gpu_peak_memory_mb``).

On a machine that has torch, transformers, peft and accelerate but not the rest of taskfit's
dependencies, the 2026-12-04 run installed these as wheels (``pip install --no-deps --target``,
``PYTHONPATH=src:TARGET``): gguf pydantic pydantic-core annotated-types typing-inspection
platformdirs datasketch python-stdnum phonenumbers detect-secrets google-re2 jsonschema
jsonschema-specifications referencing rpds-py llguidance bm25s openai distro jiter sniffio fastapi
starlette uvicorn bitsandbytes; fastapi 0.165 also needs opentelemetry-api, which was missing, so
`bench/serve_load.py` could not start the server there.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CASES = {  # name: train settings over the quickstart's generative fine-tune
    "lora": {"method": "lora"},
    "qlora": {"method": "qlora"},
    "full": {"method": "full", "learning_rate": 2e-5},
    "head": {"method": "lora", "classify_head": True},
}


def random_model(shape_of: Path, target: Path) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    target.mkdir(parents=True, exist_ok=True)
    for name in os.listdir(shape_of):
        if name.startswith("tokenizer") or name in ("chat_template.jinja", "special_tokens_map.json",
                                                    "generation_config.json"):
            shutil.copy(shape_of / name, target / name)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(shape_of), dtype=torch.float32)
    model.save_pretrained(target)
    return target


def taskfit(*args: str, log: Path, profile: Path | None = None) -> float:
    start = time.perf_counter()
    run = ["-m", "cProfile", "-o", str(profile)] if profile else []
    with log.open("a", encoding="utf-8") as f:
        f.write(f"\n$ taskfit {' '.join(args)}\n")
        f.flush()
        done = subprocess.run([sys.executable, *run, "-m", "taskfit.cli.main", *args], stdout=f,
                              stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "120"})
    if done.returncode:
        print(f"taskfit {' '.join(args)} exited {done.returncode}; the end of {log}:")
        print("\n".join(log.read_text(encoding="utf-8").splitlines()[-40:]))
    return time.perf_counter() - start if done.returncode == 0 else -1.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--shape-of", type=Path, help="random weights in this model directory's shape")
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--profile", action="store_true", help="also write each training's cProfile to OUT")
    ap.add_argument("--out", type=Path, required=True, help="the log, gpu_paths.json and the scorecards")
    ap.add_argument("--work", type=Path, help="the model and projects (default: OUT/work)")
    args = ap.parse_args()

    import torch

    from taskfit.quickstart import make_quickstart_project

    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, GPU: "
          f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or args.out / "work"
    model = args.model
    if args.shape_of:  # made once: a second call with the same --work reuses it
        made = work / "model"
        model = str(made if (made / "config.json").exists() else random_model(args.shape_of, made))
    log = args.out / "taskfit.log"
    results = {}
    for name in args.cases:
        project = work / name
        make_quickstart_project(project, force=True)
        path = project / "taskfit.yaml"
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
        config["model"]["name"] = model
        config["train"].update(CASES[name])
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        seconds = taskfit("train", str(project), log=log,
                          profile=args.out / f"train-{name}.prof" if args.profile else None)
        runs = sorted((project / "runs").glob("*/metrics.json"))
        row = {"train_s": round(seconds, 1)}
        if seconds >= 0 and runs:
            row.update(json.loads(runs[-1].read_text(encoding="utf-8"))["training"])
            manifest = json.loads((runs[-1].parent / "manifest.json").read_text(encoding="utf-8"))
            row.update(manifest.get("hardware", {}))
            row["eval_s"] = round(taskfit("eval", str(project), "--run", str(runs[-1].parent), log=log), 1)
            taskfit("compare", str(project), log=log)
            cards = sorted(project.glob("evals/*/scorecard.json"))
            if cards:
                card = json.loads(cards[-1].read_text(encoding="utf-8"))
                row["scorecard"] = card
        results[name] = row
        keep = {k: row.get(k) for k in ("train_s", "eval_s", "steps", "tokens_per_second",
                                        "steady_tokens_per_second", "gpu_peak_memory_mb", "device", "dtype")}
        print(name, json.dumps(keep), flush=True)
    (args.out / "gpu_paths.json").write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    for name in args.cases:
        md = sorted((work / name).glob("evals/*/scorecard.md"))
        if md:
            shutil.copy(md[-1], args.out / f"scorecard-{name}.md")
            print(f"\n## {name}\n" + md[-1].read_text(encoding="utf-8")[:1500])


if __name__ == "__main__":
    main()
