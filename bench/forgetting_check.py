"""The forgetting check's cost and figures for one trained run, outside `taskfit eval`.

    .venv/bin/python bench/forgetting_check.py quickstart/runs/<run> [--items 64] [--threads 1]

Loads the run's base model (the name in its resolved config) and its adapter, then times
:func:`taskfit.probes.measure_forgetting` over the first --items probe items with torch on
--threads threads (default: every core), and prints wall and CPU seconds (user + system, this
process) and the figures the scorecard shows. CPU seconds at --threads 1 hardly move with what
else the machine runs; wall seconds at 2 threads do (torch's threads wait on each other when
other processes hold the cores).
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a finished training run with a LoRA adapter")
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    import torch
    import yaml
    from peft import PeftModel

    from taskfit import stats
    from taskfit.models import load_model
    from taskfit.probes import GENERAL, load_probe, measure_forgetting
    from taskfit.training.artifacts import find_adapter

    if args.threads:
        torch.set_num_threads(args.threads)
    config = yaml.safe_load((args.run / "config.resolved.yaml").read_text(encoding="utf-8"))
    loaded = load_model(config["model"]["name"])
    model = PeftModel.from_pretrained(loaded.model, str(find_adapter(args.run))).eval()
    probe = load_probe(GENERAL, args.items)
    cpu, wall = _cpu(), time.perf_counter()
    result = measure_forgetting("fine-tuned", loaded.tokenizer, model, None, probe)
    wall, cpu = time.perf_counter() - wall, _cpu() - cpu
    print(f"{args.items} items, {torch.get_num_threads()} threads: {wall:.1f} s wall, {cpu:.1f} CPU-seconds")

    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    change, ci, p = stats.paired_difference(result.tuned_right, result.base_right, n_boot=2000)
    print(f"answered right: base {100 * mean(result.base_right):.1f}%, fine-tuned {100 * mean(result.tuned_right):.1f}%,"
          f" change {100 * change:+.1f} pts [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}], p={p:.3g}")
    change, ci, p = stats.paired_difference(result.tuned_loglik, result.base_loglik, n_boot=2000)
    print(f"log-prob per answer token: base {mean(result.base_loglik):.3f}, fine-tuned "
          f"{mean(result.tuned_loglik):.3f}, change {change:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}], p={p:.3g}")
    print(f"KL(fine-tuned || base): {mean(result.kl):.3f} nats per answer token")


if __name__ == "__main__":
    main()
