"""What a classification head should read (`train.head_pooling`): the mean of the text's final
hidden states, or the last token's, on the quickstart's sample tickets.

For each pooling it copies the quickstart project (seed 0: 480 training rows, 150 held-out), sets
`train.classify_head: true` and the pooling, and runs `taskfit train` and `taskfit eval` as a user
would, then prints the head's held-out accuracy, macro-F1 and training time. `--features` also fits
logistic regression (C by 5-fold cross-validation on the training rows) on the base model's frozen
features, mean and last token: how much of the gap the body's training closes.

    .venv/bin/python bench/head_pooling.py               # about 12 minutes on 2 cores
    .venv/bin/python bench/head_pooling.py --features    # + about 3 minutes
    .venv/bin/python bench/head_pooling.py --pooling mean --epochs 2    # about 10 minutes
    .venv/bin/python bench/head_pooling.py --pooling mean --lora-layers 10 15 all   # the quickstart's
        # recipe with adapters on the top 10, 15 and all 30 layers: about 25 minutes
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "head_pooling"


def head_run(base: Path, pooling: str, learning_rate: float | None = None, epochs: int | None = None,
             lora_layers: int | None = None, micro_batch_tokens: int | None = None) -> dict:
    """`taskfit train` then `taskfit eval` on a copy of ``base`` with a head reading ``pooling``
    (and the quickstart's learning rate, epochs, adapted layers and micro-batches unless given)."""
    project = OUT / (f"{pooling}-lr{learning_rate or 'qs'}-ep{epochs or 'qs'}-layers{lora_layers or 'all'}"
                     f"-mbt{micro_batch_tokens or 'default'}")
    shutil.rmtree(project, ignore_errors=True)
    shutil.copytree(base, project, ignore=shutil.ignore_patterns("runs", "evals"))
    path = project / "taskfit.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["train"].update(classify_head=True, head_pooling=pooling)
    doc["train"].update({k: v for k, v in (("learning_rate", learning_rate), ("epochs", epochs)) if v is not None})
    if lora_layers is not None:
        doc["train"].setdefault("lora", {})["layers"] = lora_layers
    if micro_batch_tokens is not None:
        doc["train"]["micro_batch_tokens"] = micro_batch_tokens
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    taskfit = str(Path(sys.executable).with_name("taskfit"))
    start = time.time()
    with open(project / "train.log", "w") as log:
        subprocess.run([taskfit, "train", str(project)], check=True, stdout=log, stderr=subprocess.STDOUT)
        trained = time.time() - start
        subprocess.run([taskfit, "eval", str(project)], check=True, stdout=log, stderr=subprocess.STDOUT)
    (result,) = project.glob("evals/*/results/fine-tuned-head.json")
    metrics = json.loads(result.read_text())["metrics"]
    return {"pooling": pooling, "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
            "train_s": round(trained), "eval_s": round(time.time() - start - trained)}


def frozen_features(base: Path) -> dict[str, float]:
    """Held-out accuracy of logistic regression on the base model's frozen mean / last-token features."""
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from taskfit.rendering import classifier_ids
    from taskfit.workflows.workspace import Workspace

    ws = Workspace.open(base)
    lm = ws.lm()
    model, tok = lm.model, lm.tokenizer

    def features(rows):
        mean, last = [], []
        with torch.no_grad():
            for i in range(0, len(rows), 16):
                ids = [classifier_ids(tok, r, ws.config.train.max_seq_length) for r in rows[i:i + 16]]
                width = max(map(len, ids))
                x = torch.full((len(ids), width), tok.pad_token_id)
                m = torch.zeros_like(x)
                for j, row in enumerate(ids):
                    x[j, :len(row)], m[j, :len(row)] = torch.tensor(row), 1
                h = model.model(input_ids=x, attention_mask=m).last_hidden_state
                mean.append(((h * m[..., None]).sum(1) / m.sum(1, keepdim=True)).numpy())
                last.append(h[torch.arange(len(ids)), m.sum(1) - 1].numpy())
        return {"mean": np.concatenate(mean), "last": np.concatenate(last)}

    train, held = ws.train, ws.eval_rows
    a, b = features(train), features(held)
    out = {}
    for pooling in ("mean", "last"):
        clf = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=[0.01, 0.1, 1, 10], cv=5, max_iter=3000))
        clf.fit(a[pooling], [r.target for r in train])
        out[pooling] = float(clf.score(b[pooling], [r.target for r in held]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", action="store_true", help="also the frozen-feature probe")
    parser.add_argument("--pooling", nargs="+", default=["mean", "last"])
    parser.add_argument("--lr", type=float, help="learning rate (default: the quickstart's, 1e-3)")
    parser.add_argument("--epochs", type=int, help="epochs (default: the quickstart's, 2)")
    parser.add_argument("--lora-layers", nargs="+", default=["all"],
                        help="adapters on the top N decoder layers (train.lora.layers), or all")
    parser.add_argument("--micro-batch-tokens", nargs="+", default=["default"],
                        help="train.micro_batch_tokens values to run (default: the CPU default, 128)")
    args = parser.parse_args()
    from taskfit.quickstart import make_quickstart_project

    base = OUT / "quickstart"
    if not (base / "taskfit.yaml").exists():
        make_quickstart_project(base)
    print("| pooling | learning rate | epochs | adapted layers | micro-batch tokens | head accuracy | macro-F1 | "
          "training (s) | evaluation (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for pooling in args.pooling:
        for layers in args.lora_layers:
            for tokens in args.micro_batch_tokens:
                r = head_run(base, pooling, args.lr, args.epochs, None if layers == "all" else int(layers),
                             None if tokens == "default" else int(tokens))
                print(f"| {pooling} | {args.lr or 'quickstart'} | {args.epochs or 'quickstart'} | {layers} | {tokens} | "
                      f"{r['accuracy']:.1%} | {r['macro_f1']:.1%} | {r['train_s']} | {r['eval_s']} |", flush=True)
    if args.features:
        for pooling, accuracy in frozen_features(base).items():
            print(f"frozen features, {pooling}: logistic regression {accuracy:.1%}")


if __name__ == "__main__":
    main()
