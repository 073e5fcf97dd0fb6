"""A bounded load test of `taskfit serve` on loopback, batched against one-at-a-time.

    .venv/bin/python bench/serve_load.py                          # the embedded model
    .venv/bin/python bench/serve_load.py --adapter triage=quickstart/runs/<run> --requests 500
    .venv/bin/python bench/serve_load.py --engine llama-cpp --requests 200 --lone 12 --baseline REV

Starts `taskfit serve` as a separate process (the real command, its own memory), then sends
``--requests`` chat completions from ``--clients`` concurrent clients with the official `openai`
client: plain replies, JSON-schema replies and, with ``--adapter``, classify requests to a trained
adapter. Every request carries planted personal data (an e-mail address, a card number, a phone
number) unique to it. It prints throughput and p50/p95/p99 latency, the count of 5xx (must be
0), the server's resident memory after the first and the last hundred requests, and then checks
that the request log holds a row for each request and none of the planted data. A second server
with ``max_batch: 1`` answers ``--baseline-requests`` of the same requests with the same clients,
and the ratio of throughputs is batching's gain.

``--gather 1,3 --rounds 3`` runs the batched server at each ``limits.gather`` in turns, three
times each, and prints the ratio of their mean throughputs (1 is the engine before gathering: every
waiting request read at the next step); batching's gain is printed for the last value.

``--lone N`` then sends N requests of each kind one after another (one client, nothing else in
flight) and prints each kind's median latency: the wait of a lone request. With ``--baseline
REV``, a server running that commit's code (its ``src/``, from ``git archive``) is up beside this
tree's and answers the same lone requests in turns with it (the k-th request of a kind to both,
which one first alternating), and the ratios are printed: the prefix cache's gain is measured
against ``--baseline`` at the commit before it.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

SCHEMA = {"type": "object", "additionalProperties": False, "required": ["intent", "urgent"],
          "properties": {"intent": {"type": "string", "maxLength": 24}, "urgent": {"type": "boolean"}}}
TICKETS = ["I was charged twice for my subscription this month", "The app crashes every time I log in",
           "Where is my parcel? It was due last week", "Please cancel my plan at the end of the month",
           "How do I change the e-mail address on my account", "My refund has not arrived yet"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pii(i: int) -> tuple[str, str, str]:
    """An e-mail address, a card number (Luhn-valid, as a real one is) and a phone number."""
    from stdnum import luhn

    digits = f"411111111{i % 1000000:06d}"
    card = digits + luhn.calc_check_digit(digits)
    return f"customer{i}@example.org", " ".join(card[k:k + 4] for k in range(0, 16, 4)), f"+44 20 7946 {i % 10000:04d}"


def _rss(url: str) -> float:
    import urllib.request

    text = urllib.request.urlopen(url.removesuffix("/v1") + "/metrics").read().decode()
    return float(re.search(r"^process_resident_memory_bytes (\S+)$", text, re.M).group(1)) / 2**20


def _start(config: dict, workdir: Path, threads: int | None, src: Path | None = None) -> tuple[subprocess.Popen, str]:
    """Start `taskfit serve` (with ``src``: that tree's code) and wait until it answers."""
    path = workdir / f"serve-{config['port']}.yaml"
    path.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "taskfit.cli.main", "serve", str(path)]
    if threads:
        cmd += ["--threads", str(threads)]
    env = {**os.environ, "PYTHONPATH": str(src)} if src is not None else None
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(workdir / "server.log", "a"), env=env)
    url = f"http://127.0.0.1:{config['port']}/v1"
    import urllib.request

    for _ in range(600):
        if proc.poll() is not None:
            tail = "\n".join((workdir / "server.log").read_text(encoding="utf-8", errors="replace").splitlines()[-30:])
            raise SystemExit(f"the server exited; the end of {workdir / 'server.log'}:\n{tail}")
        try:
            urllib.request.urlopen(url.removesuffix("/v1") + "/health")
            return proc, url
        except OSError:
            time.sleep(0.5)
    raise SystemExit("the server did not start in 5 minutes")


KINDS = ("plain", "json", "classify")  # request i is of kind i % 3 (i % 2 without an adapter)


def _load(url: str, n: int, clients: int, adapter: str | None, max_tokens: int, on_done=None, kinds=None,
          skip: int = 0):
    """Send ``n`` requests (``kinds``: only requests of these kinds, from the ``skip``-th on) from
    ``clients`` threads."""
    import openai

    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=600)
    numbers = list(itertools.islice((i for i in itertools.count()
                                     if kinds is None or KINDS[i % (3 if adapter else 2)] in kinds), skip, skip + n))

    def one(i: int) -> tuple[float, int, int]:
        email, card, phone = _pii(i)
        text = f"{TICKETS[i % len(TICKETS)]}. I am {email}, card {card}, phone {phone}."
        kind = i % 3 if adapter else i % 2
        kw: dict = {"max_tokens": max_tokens}
        model = "base"
        if kind == 1:
            kw["response_format"] = {"type": "json_schema", "json_schema": {"name": "t", "schema": SCHEMA}}
        elif kind == 2:
            model = adapter
        start = time.perf_counter()
        try:
            reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}], **kw)
            status, tokens = 200, reply.usage.completion_tokens
        except openai.APIStatusError as exc:
            status, tokens = exc.status_code, 0
        except openai.APIConnectionError:
            status, tokens = 599, 0
        latency = time.perf_counter() - start
        if on_done:
            on_done(i)
        return latency, status, tokens

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, numbers))
    return results, time.perf_counter() - start


def _lone(urls: dict[str, str], n: int, adapter: str | None, max_tokens: int) -> dict[str, dict[str, float]]:
    """Each side's median latency for each kind of request, sent one at a time to the servers
    ``urls`` (side -> URL) in turns: the k-th request of a kind goes to every side, the first side
    alternating, so a slow spell of the machine falls on both (after one to warm each up)."""
    import numpy as np

    out: dict[str, dict[str, float]] = {side: {} for side in urls}
    for kind in KINDS if adapter else KINDS[:2]:
        for url in urls.values():
            _load(url, 1, 1, adapter, max_tokens, kinds=(kind,))
        seconds: dict[str, list[float]] = {side: [] for side in urls}
        for k in range(1, n + 1):
            for side in (list(urls) if k % 2 else list(urls)[::-1]):
                time.sleep(0.25)  # the other server's threads settle (llama.cpp's spin a while after work)
                (latency, status, _), = _load(urls[side], 1, 1, adapter, max_tokens, kinds=(kind,), skip=k)[0]
                assert status == 200, (side, kind, status)
                seconds[side].append(latency)
        for side, values in seconds.items():
            out[side][kind] = float(np.percentile(values, 50))
    return out


def _report(name: str, results, seconds: float) -> float:
    import numpy as np

    lat = np.array([r[0] for r in results])
    statuses = [r[1] for r in results]
    tokens = sum(r[2] for r in results)
    print(f"{name}: {len(results)} requests in {seconds:.1f} s = {len(results) / seconds:.2f} req/s, "
          f"{tokens / seconds:.1f} completion tokens/s; latency p50 {np.percentile(lat, 50):.2f} s, "
          f"p95 {np.percentile(lat, 95):.2f} s, p99 {np.percentile(lat, 99):.2f} s; "
          f"5xx: {sum(s >= 500 for s in statuses)}, 4xx: {sum(400 <= s < 500 for s in statuses)}")
    return len(results) / seconds


def _batched(config: dict, workdir: Path, args, adapter_name: str | None, log: Path, name: str) -> float:
    """One batched run: its throughput, after printing its latency, memory and request log."""
    proc, url = _start(config, workdir, args.threads)
    rss: dict[int, float] = {}
    finished = itertools.count(1)

    def sample(i: int) -> None:
        done = next(finished)
        if done % 100 == 0:
            rss[done] = _rss(url)

    try:
        results, seconds = _load(url, args.requests, args.clients, adapter_name, args.max_tokens, sample)
        batched = _report(name, results, seconds)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
    if len(rss) >= 2:
        first, last = rss[min(rss)], rss[max(rss)]
        print("server memory (resident) after each hundred requests: "
              + ", ".join(f"{n}: {mib:.0f} MiB" for n, mib in sorted(rss.items()))
              + f"; first to last hundred: {last - first:+.0f} MiB ({100 * (last - first) / first:+.1f}%)")

    db = sqlite3.connect(log)
    logged = db.execute("SELECT count(*) FROM requests").fetchone()[0]
    dump = "\n".join(db.iterdump())
    leaked = sum(any(p in dump for p in _pii(i)) for i in range(args.requests))
    redacted = db.execute("SELECT count(*) FROM requests WHERE request LIKE '%<EMAIL>%' "
                          "AND request LIKE '%<CARD>%' AND request LIKE '%<PHONE>%'").fetchone()[0]
    print(f"request log: {logged} rows for {args.requests} requests; {redacted} with e-mail, card and phone "
          f"redacted; planted data found for {leaked} requests")
    return batched


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="smollm2-135m")
    ap.add_argument("--engine", choices=["transformers", "llama-cpp"], default="transformers")
    ap.add_argument("--adapter", help="NAME=RUN_DIR: a trained classify run to send a third of the requests to")
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--baseline-requests", type=int, default=96)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=12)
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--lone", type=int, default=12, help="requests of each kind sent one after another (0: none)")
    ap.add_argument("--baseline", metavar="REV", help="also time the lone requests with this commit's server")
    ap.add_argument("--gather", metavar="N,M", help="batched runs at these limits.gather values, in turns (the "
                                                    "last is the one batching's gain is printed for)")
    ap.add_argument("--rounds", type=int, default=1, help="batched runs of each --gather value")
    args = ap.parse_args()
    import numpy as np

    sys.stdout.reconfigure(line_buffering=True)

    workdir = Path(tempfile.mkdtemp(prefix="taskfit-serve-load-"))
    adapter_name = None
    config = {"base": args.base, "base_name": "base", "engine": args.engine,
              "limits": {"max_batch": args.max_batch, "queue": 256, "timeout_s": 600},
              "log": {"path": str(workdir / "requests.sqlite")}}
    if args.adapter:
        adapter_name, _, run = args.adapter.partition("=")
        config["adapters"] = {adapter_name: str(Path(run).resolve())}
    print(f"server work dir: {workdir}")

    gathers = [int(g) for g in args.gather.split(",")] if args.gather else [None]
    throughput: dict[int | None, list[float]] = {g: [] for g in gathers}
    for round_ in range(args.rounds):
        for gather in gathers:  # in turns, so a slow spell of the machine falls on every side
            limits = config["limits"] if gather is None else {**config["limits"], "gather": gather}
            log = workdir / f"requests-{round_}-{gather}.sqlite"
            served = {**config, "port": _free_port(), "limits": limits, "log": {"path": str(log)}}
            throughput[gather].append(_batched(served, workdir, args, adapter_name, log,
                                               f"batched (max_batch {args.max_batch}"
                                               + (f", gather {gather})" if gather else ")")))
    batched = float(np.mean(throughput[gathers[-1]]))
    if len(gathers) > 1 or args.rounds > 1:
        for gather, values in throughput.items():
            print(f"gather {gather if gather else '(default)'}: " + ", ".join(f"{v:.2f}" for v in values)
                  + f" req/s; mean {np.mean(values):.2f}")
        if len(gathers) > 1:
            print(f"gather {gathers[-1]} / gather {gathers[0]}: "
                  f"{np.mean(throughput[gathers[-1]]) / np.mean(throughput[gathers[0]]):.2f}x requests per second")

    proc, url = _start({**config, "port": _free_port(), "limits": {**config["limits"], "max_batch": 1},
                        "log": {"path": None}}, workdir, args.threads)
    try:
        results, seconds = _load(url, args.baseline_requests, args.clients, adapter_name, args.max_tokens)
        single = _report("one at a time (max_batch 1)", results, seconds)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
    print(f"batching's gain: {batched / single:.2f}x requests per second "
          f"({args.clients} clients, {os.cpu_count()} CPUs, max_tokens {args.max_tokens})")

    if not args.lone:
        return
    sides = {"this tree": None}
    if args.baseline:
        src = workdir / "baseline"
        src.mkdir()
        archive = subprocess.run(["git", "archive", args.baseline, "src"], cwd=Path(__file__).resolve().parents[1],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
        sides[args.baseline] = src / "src"
    procs, urls = [], {}
    try:
        for side, src in sides.items():  # every side's server up at once; idle, one costs no CPU
            proc, urls[side] = _start({**config, "port": _free_port(), "log": {"path": None}}, workdir, args.threads,
                                      src)
            procs.append(proc)
        lone = _lone(urls, args.lone, adapter_name, args.max_tokens)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
            proc.wait(120)
    for side, medians in lone.items():
        print(f"lone request, median latency ({side}): "
              + ", ".join(f"{kind} {seconds:.3f} s" for kind, seconds in medians.items()))
    if args.baseline:
        print("lone request latency, this tree / " + args.baseline + ": "
              + ", ".join(f"{kind} {lone['this tree'][kind] / lone[args.baseline][kind]:.2f}"
                          for kind in lone["this tree"]))


if __name__ == "__main__":
    main()
