"""Serving throughput and latency: a real `continual serve` on 127.0.0.1 and a bounded async
client, micro-batched (`mixed`) against grouping per task (`task`) and one pass per request
(`off`).

    python -m bench.serve [--quick] [--home DIR] [--out bench/results/serve.json]

The registry: 8 catalog tasks learnt on minilm (20 steps each: serving speed does not depend
on how well a prefix learnt; `--home` reuses a registry built earlier). Three servers run side
by side, one per batching mode, each with `--workers 0` and no rate limit. For the demo's 5
tasks and for all 8, at 1, 8 and 32 concurrent clients, each client sends requests of one
text, for a random task of the set (the text from that task's eval split), until the run's
fixed number of requests is answered; the three modes take turns, the order rotated every
round, and medians over the rounds are quoted. Also: seconds from starting a server to its
first 200 from /readyz with the backbone in the asset cache.

Targets (the service issue): at 32 clients mixed throughput >= 3x `off`; p99 <= 3x p50 at 8
clients (mixed); ready in <= 10 s. Client and servers share this machine's cores: the client's
own CPU time is in every figure, as it would be for a co-located caller.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import ROOT, machine, median, paired_ratio, table, write

DEMO = ("sms_spam", "vader_tweets", "trec", "bbc_news", "imdb")
MORE = ("rotten_tomatoes", "vader_movies", "vader_nyt")
MODES = ("mixed", "task", "off")
CLIENTS = (1, 8, 32)


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
    for name in ("CONTINUAL_HOME", "CONTINUAL_REGISTRY_URL", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)
    return env


def _cli(home: Path, *argv: str) -> dict[str, Any]:
    args = [sys.executable, "-m", "pipelines.cli", *argv, "--home", str(home), "--json"]
    args += ["--quiet", "--tracking-uri", "none"]
    done = subprocess.run(args, cwd=ROOT, env=_env(), capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"continual {' '.join(argv[:2])} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def build(home: Path, tasks: tuple[str, ...], steps: int) -> None:
    """Learn `tasks` into stream `bench` of `home` (skipped when they are there already)."""
    have = set()
    if (home / "registry.db").exists():
        have = {t["name"] for t in _cli(home, "registry", "tasks", "--limit", "1000")["tasks"]}
    todo = [t for t in tasks if t not in have]
    for name in todo:
        _cli(
            home, "learn", "--queue", "--backbone", "minilm", "--stream", "bench",
            "--dataset", name, "--steps", str(steps), "--batch-size", "16",
            "--max-train", "320", "--max-eval", "64", "--max-length", "64", "--init", "random",
        )  # fmt: skip
    if todo:
        print(f"learning {len(todo)} task(s) ...", file=sys.stderr, flush=True)
        done = _cli(home, "worker", "--until-empty")["jobs"]
        failed = [j for j in done if j["state"] != "done"]
        if failed:
            raise SystemExit(f"arrivals failed: {failed}; see `continual jobs --home {home}`")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, home: Path, mode: str, log: Path, window_ms: float | None = None) -> None:
        self.port = _port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [sys.executable, "-m", "pipelines.cli", "serve", "--home", str(home)]
        argv += ["--port", str(self.port), "--workers", "0", "--batching", mode]
        argv += ["--rate-limit", "1000000", "--max-batch", "64", "--tracking-uri", "none"]
        if window_ms is not None:
            argv += ["--batch-window-ms", str(window_ms)]
        began = time.perf_counter()
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, env=_env(), stdout=log.open("w"), stderr=subprocess.STDOUT
        )
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"server ({mode}) exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.ready_s = time.perf_counter() - began

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


async def _load(
    url: str, texts: dict[str, list[str]], tasks: tuple[str, ...], clients: int, n: int, seed: int
) -> dict[str, Any]:
    rng = random.Random(seed)
    requests = []
    for _ in range(n):
        task = rng.choice(tasks)
        requests.append({"inputs": [rng.choice(texts[task])], "task": task})
    latencies: list[float] = []
    queue: asyncio.Queue = asyncio.Queue()
    for r in requests:
        queue.put_nowait(r)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def one_client() -> None:
            while True:
                try:
                    body = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                t0 = time.perf_counter()
                r = await client.post("/v1/predict", json=body)
                latencies.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    raise SystemExit(f"predict answered {r.status_code}: {r.text[:300]}")

        began, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        wall, cpu = time.perf_counter() - began, time.process_time() - cpu
    latencies.sort()

    def pct(p: float) -> float:
        return 1000 * latencies[min(len(latencies) - 1, int(p * len(latencies)))]

    return {
        "rps": n / wall,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "n": n,
        "client_cpu_ms_per_request": 1000 * cpu / n,  # the client's own share of the cores
    }


def ceiling(home: Path, texts: dict[str, list[str]], tasks: tuple[str, ...]) -> dict[str, Any]:
    """The pass itself, in this process (no HTTP): median seconds to answer 1 and 32 inputs of
    random tasks. Batching saves the per-pass cost; the per-input compute stays, so 32 answers
    in one pass can be at most (time of 1) / (time of 32 / 32) times faster than 32 passes."""
    from pipelines.service.answers import Answerer
    from registry import Registry

    rng = random.Random(7)
    out: dict[str, Any] = {}
    with Registry.open(home, tracking_uri="none") as reg:
        answerer = Answerer(reg)
        answerer.load()
        for n in (1, 8, 32):
            times = []
            for _ in range(9):
                items = []
                for _ in range(n):
                    t = rng.choice(tasks)
                    items.append((t, rng.choice(texts[t])))
                t0 = time.perf_counter()
                answerer.answer(items)
                times.append(time.perf_counter() - t0)
            out[f"pass_ms_{n}"] = 1000 * median(times[1:])
    out["max_speedup_32"] = out["pass_ms_1"] / (out["pass_ms_32"] / 32)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.serve", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="5 tasks, 1 round, few requests")
    ap.add_argument("--home", type=Path, help="a registry to (re)use (default: a temporary one)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--batch-window-ms", type=float, help="the servers' window (default: theirs)")
    args = ap.parse_args(argv)
    tasks = DEMO if args.quick else DEMO + MORE
    rounds = 1 if args.quick else args.rounds
    per = {1: 24, 8: 96, 32: 192} if args.quick else {1: 64, 8: 256, 32: 512}
    tmp = tempfile.TemporaryDirectory(prefix="continual-bench-serve-")
    home = (args.home or Path(tmp.name) / "home").resolve()
    build(home, tasks, steps=10 if args.quick else 20)

    from tasks import catalog

    texts = {t: [e.text for e in catalog.load(t).eval[:200]] for t in tasks}
    window = args.batch_window_ms
    servers = {m: Server(home, m, Path(tmp.name) / f"server-{m}.log", window) for m in MODES}
    sets = {"5": DEMO} if args.quick else {"5": DEMO, "8": DEMO + MORE}
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    try:
        for key, chosen in sets.items():
            for clients in CLIENTS:
                label = f"{key} tasks, {clients} client(s)"
                runs: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
                order = list(MODES)
                for r in range(rounds):
                    for m in order:
                        asyncio.run(
                            _load(servers[m].url, texts, chosen, clients, 8, seed=-1)
                        )  # warm
                        got = asyncio.run(
                            _load(servers[m].url, texts, chosen, clients, per[clients], seed=r)
                        )
                        runs[m].append(got)
                        print(
                            f"  {label} round {r + 1} {m}: {got['rps']:.1f} req/s",
                            file=sys.stderr,
                            flush=True,
                        )
                    order = order[1:] + order[:1]
                results[f"{key}/{clients}"] = runs
        ready = {m: round(s.ready_s, 2) for m, s in servers.items()}
        cold = Server(home, "mixed", Path(tmp.name) / "server-again.log")
        ready["mixed, second start"] = round(cold.ready_s, 2)
        cold.stop()
    finally:
        for s in servers.values():
            s.stop()

    limit = ceiling(home, texts, sets["5"])
    print("the pass alone (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in limit.items()))
    rows, summary = [], []
    for key, runs in results.items():
        n_tasks, clients = key.split("/")
        for m in MODES:
            rs = runs[m]
            rows.append([n_tasks, int(clients), m, median([x["rps"] for x in rs]),
                         median([x["p50_ms"] for x in rs]), median([x["p99_ms"] for x in rs])])  # fmt: skip
        summary.append({
            "tasks": int(n_tasks),
            "clients": int(clients),
            "mixed_over_off": paired_ratio([x["rps"] for x in runs["mixed"]], [x["rps"] for x in runs["off"]]),
            "task_over_off": paired_ratio([x["rps"] for x in runs["task"]], [x["rps"] for x in runs["off"]]),
            "mixed_p99_over_p50": median([x["p99_ms"] / x["p50_ms"] for x in runs["mixed"]]),
        })  # fmt: skip
    head = ["tasks", "clients", "batching", "req/s", "p50 ms", "p99 ms"]
    print(table(head, rows))
    print(table(["tasks", "clients", "mixed/off", "task/off", "mixed p99/p50"],
                [[s["tasks"], s["clients"], s["mixed_over_off"], s["task_over_off"], s["mixed_p99_over_p50"]] for s in summary]))  # fmt: skip
    print("ready (s):", ready)
    at32 = [s for s in summary if s["clients"] == 32]
    at8 = [s for s in summary if s["clients"] == 8]
    doc = {
        "bench": "serve",
        "machine": machine(),
        "setup": {
            "tasks": list(tasks),
            "rounds": rounds,
            "requests": per,
            "inputs_per_request": 1,
            "batch_window_ms": window,
        },
        "rows": [
            dict(zip(["tasks", "clients", "batching", "rps", "p50_ms", "p99_ms"], r)) for r in rows
        ],
        "summary": summary,
        "ready_s": ready,
        "pass_alone": limit,
        "targets": {
            "mixed_over_off_at_32_min_3": min(s["mixed_over_off"] for s in at32) >= 3,
            "p99_within_3x_p50_at_8": max(s["mixed_p99_over_p50"] for s in at8) <= 3,
            "ready_within_10_s": max(ready.values()) <= 10,
        },
        "runs": results,
    }
    path = write(
        "serve", doc, args.out if args.out or not args.quick else Path(tmp.name) / "serve.json"
    )
    print(f"wrote {path}")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
