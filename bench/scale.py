"""Cost of a stream as it grows: time per arrival against T under `--reeval full|audit|proof`.

    python -m bench.scale --T 10,100         # about 25 minutes on 2 CPU cores
    python -m bench.scale --T 10,100,1000    # about 3 hours: 8-11 s per arrival under audit

One stream of small synthetic tasks is built under `audit` on minilm: task i is two labels of a
catalog set (sms_spam, the vader sets, trec, bbc_news, rotten_tomatoes, by turns), 24 training
examples and 50 eval examples drawn with seed i, trained for a few steps. At each checkpoint T
the workspace is copied and one more arrival is measured in each mode side by side (a warm-up
arrival first, so the backbone load is not counted), with routing latency (one input routed
among the T tasks) and accuracy (the checkpoint arrival's routing rows), registry size and the
stream's total time so far. Then the Ray part: `--ray N` independent arrivals (each its own
stream) run by one in-process worker and by a local Ray instance, 2 at once. MLflow is off (`--tracking-uri none`) and the per-arrival report is
not written: both are outside what re-evaluation costs. Results: bench/results/scale.json,
written again after each checkpoint (`"complete": false` until the end), so a long run that is
stopped keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import machine, table, write
from bench.scale_ray import parallel

POOL = (
    "sms_spam",
    "vader_tweets",
    "trec",
    "vader_movies",
    "bbc_news",
    "vader_amazon",
    "rotten_tomatoes",
    "vader_nyt",
)
STREAM = "scale"
TRAIN = {"steps": 4, "batch_size": 8, "lr": 1.0e-2, "max_length": 48, "eval_every": 4}
MODES = ("full", "audit", "proof")


def _pool() -> dict[str, dict[str, dict[str, list[str]]]]:
    """Per catalog set, per split, per label: its texts."""
    from tasks.load import DataArgs, load_data

    out: dict[str, dict[str, dict[str, list[str]]]] = {}
    for name in POOL:
        data = load_data(DataArgs(dataset=name, seed=0))
        out[name] = {}
        for split, examples in (("train", data.train), ("eval", data.eval)):
            by: dict[str, list[str]] = {}
            for e in examples:
                by.setdefault(str(e.target), []).append(e.text)
            out[name][split] = by
    return out


def write_task(folder: Path, i: int, pool: dict[str, Any]) -> tuple[Path, Path]:
    """Task i's train and eval JSONL: two labels of one catalog set, seeded by i."""
    rng = random.Random(i)
    source = pool[POOL[i % len(POOL)]]
    labels = sorted(set(source["train"]) & set(source["eval"]))
    pair = rng.sample(labels, 2)
    paths = []
    for split, n in (("train", 24), ("eval", 50)):
        rows = []
        for k in range(n):
            label = pair[k % 2]
            rows.append({"text": rng.choice(source[split][label]), "label": label})
        path = folder / f"s{i:04d}-{split}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        paths.append(path)
    return paths[0], paths[1]


def plan(i: int, folder: Path, pool: dict[str, Any], mode: str):
    from continual.train import TrainConfig
    from pipelines.arrival.plan import ArrivalPlan
    from tasks.load import DataArgs

    train, ev = write_task(folder, i, pool)
    data = DataArgs(train=str(train), eval=str(ev), text_field="text", target_field="label")
    return ArrivalPlan(
        name=f"s{i:04d}",
        data=data,
        config=TrainConfig(**TRAIN),
        prefix_length=4,
        init="random",
        reeval=mode,
    )


class Stream:
    """A workspace with a worker that runs each queued arrival at once."""

    def __init__(self, home: Path) -> None:
        from pipelines.arrival.worker import Worker
        from pipelines.settings import RegistryArgs

        self.home = home
        self.args = RegistryArgs(home=home, url=None, tracking_uri="none")
        self.worker = Worker(
            registry=self.args, progress=False, say=lambda _: None, report=False, poll_s=0.05
        )

    def arrive(self, p: Any) -> float:
        """Queue `p` and run it; the job's own seconds (queue to done, in the worker)."""
        from pipelines.arrival.queueing import enqueue_arrival

        with self.args.open() as reg:
            enqueue_arrival(reg, plan=p, backbone="minilm", stream=STREAM)
        (outcome,) = self.worker.serve(until_empty=True)
        assert outcome["state"] == "done", outcome
        return float(outcome["seconds"])


def size(home: Path) -> dict[str, Any]:
    db = sum(f.stat().st_size for f in home.glob("registry.db*"))
    art = sum(f.stat().st_size for f in (home / "artifacts").rglob("*") if f.is_file())
    return {"database_bytes": db, "artifact_bytes": art}


def routing(home: Path, T: int) -> dict[str, Any]:
    """Routing accuracy recorded at the last arrival (its sampled tasks' inputs, routed among all
    T tasks), and the latency of routing one input among T tasks (median of 20)."""
    from continual.backbones import load_backbone
    from pipelines import ledger
    from pipelines.serve import AutoPredictor
    from registry import Registry

    with Registry.open(home, tracking_uri="none") as reg:
        rows = [
            e
            for e in reg.streams.evaluations(STREAM)
            if e.method == ledger.ROUTING and e.position == T - 1
        ]
        n = sum(e.n for e in rows)
        backbone = load_backbone("minilm")
        began = time.perf_counter()
        predictor = AutoPredictor(reg, backbone)
        build = time.perf_counter() - began
        times = []
        for k in range(21):
            began = time.perf_counter()
            predictor.route([f"is this message number {k} spam or a question about prices?"])
            times.append(time.perf_counter() - began)
    return {
        "routing_accuracy": sum(e.value * e.n for e in rows) / n if n else None,
        "routing_inputs": n,
        "route_one_ms": 1000 * statistics.median(times[1:]),
        "router_build_s": build,
        "router": predictor.router.kind,
    }


def clone(home: Path, copy: Path) -> None:
    """A copy of the workspace; artifact files (content-addressed, never written in place) are
    hard links, so a copy of a 1,000-task workspace costs no disk."""

    def link_or_copy(src: str, dst: str) -> None:
        if f"{os.sep}artifacts{os.sep}" in src:
            os.link(src, dst)
        else:
            shutil.copy2(src, dst)

    shutil.copytree(home, copy, copy_function=link_or_copy)


def probe(
    home: Path, T: int, pool: dict[str, Any], scratch: Path, repeats: int, modes=MODES
) -> dict:
    """One more arrival after T tasks, per mode, in copies of the workspace."""
    out: dict[str, Any] = {}
    for mode in modes:
        times = []
        for r in range(1 if mode == "full" and T >= 500 else repeats):
            copy = scratch / f"probe-{T}-{mode}-{r}"
            clone(home, copy)
            try:
                s = Stream(copy)
                s.arrive(plan(900_000 + r, scratch, pool, "proof"))  # warm-up: loads minilm
                times.append(s.arrive(plan(900_100 + r, scratch, pool, mode)))
            finally:
                shutil.rmtree(copy, ignore_errors=True)
        out[mode] = {"seconds": times, "median_s": statistics.median(times)}
    return out


def checkpoint(
    home: Path,
    per_arrival: list[float],
    pool: dict[str, Any],
    scratch: Path,
    repeats: int,
    modes: tuple[str, ...] = MODES,
) -> dict[str, Any]:
    """The row of a checkpoint after the stream's `len(per_arrival)` arrivals."""
    T = len(per_arrival)
    return {
        "T": T,
        "stream_seconds": sum(per_arrival),
        "audit_arrival_median_last_10_s": statistics.median(per_arrival[-10:]),
        **size(home),
        **routing(home, T),
        "next_arrival": probe(home, T, pool, scratch, repeats, modes),
    }


def arrival_seconds(home: Path) -> list[float]:
    """Each arrival's own seconds (queue to done, in the worker), read back from its job."""
    from registry import Registry

    with Registry.open(home, tracking_uri="none") as reg:
        jobs, offset = [], 0
        while batch := reg.queue.list(stream=STREAM, state="done", limit=500, offset=offset):
            jobs += batch
            offset += len(batch)
    jobs.sort(key=lambda j: j.position)
    return [float(j.result["seconds"]) for j in jobs if j.result]


def from_home(home: Path, into: Path, repeats: int, modes: tuple[str, ...]) -> int:
    """A checkpoint of a stream this bench built and was stopped in (its scratch folder left,
    as a killed run leaves it): measured now at the stream's T and added to `into`, with the
    per-arrival seconds read back from the stream's jobs."""
    pool = _pool()
    per_arrival = arrival_seconds(home)
    T = len(per_arrival)
    scratch = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    try:
        row = checkpoint(home, per_arrival, pool, scratch, repeats, modes)
        row["measured_after_a_stop"] = True
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    doc = json.loads(into.read_text())
    rows = [r for r in doc["checkpoints"] if r["T"] < T] + [row]
    doc.update(document(rows, per_arrival, doc.get("ray_parallel"), time.perf_counter()))
    doc["wall_seconds"] = None
    print(json.dumps({k: v for k, v in row.items() if k != "next_arrival"}), flush=True)
    write("scale", doc, into)
    return 0


def document(rows: list[dict], per_arrival: list[float], ray_part: Any, began: float) -> dict:
    base = rows[0]["next_arrival"]
    return {
        "bench": "scale",
        "machine": machine(),
        "setup": {"backbone": "minilm", "train": TRAIN, "prefix_length": 4, "pool": POOL},
        "checkpoints": rows,
        "per_arrival_audit_s": per_arrival,
        "ratios_vs_first": {
            mode: {
                str(r["T"]): r["next_arrival"][mode]["median_s"] / base[mode]["median_s"]
                for r in rows
                if mode in r["next_arrival"]
            }
            for mode in MODES
        },
        "ray_parallel": ray_part,
        "wall_seconds": time.perf_counter() - began,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", default="10,100,1000", help="checkpoints (comma-separated)")
    ap.add_argument("--repeats", type=int, default=3, help="probe arrivals per mode")
    ap.add_argument("--ray", type=int, default=6, metavar="N", help="arrivals of the Ray part")
    ap.add_argument("--ray-rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, help="results file (default bench/results/scale.json)")
    ap.add_argument(
        "--from-home",
        type=Path,
        metavar="HOME",
        help="measure a checkpoint of the stream in HOME (a stopped run's) and add it to --out",
    )
    ap.add_argument("--modes", default=",".join(MODES), help="probe modes (with --from-home)")
    ap.add_argument(
        "--full-until",
        type=int,
        default=10**9,
        metavar="T",
        help="probe `full` only at checkpoints up to T (it is linear in T: ~20 min a probe at 1,000)",
    )
    a = ap.parse_args(argv)
    if a.from_home:
        into = a.out or Path(__file__).parent / "results" / "scale.json"
        return from_home(a.from_home, into, a.repeats, tuple(a.modes.split(",")))
    checkpoints = sorted({int(x) for x in a.T.split(",")})
    pool = _pool()
    scratch = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    home = scratch / "home"
    stream = Stream(home)
    per_arrival: list[float] = []
    rows: list[dict[str, Any]] = []
    began = time.perf_counter()
    try:
        for i in range(checkpoints[-1]):
            per_arrival.append(stream.arrive(plan(i, scratch, pool, "audit")))
            if (i + 1) % 50 == 0:
                recent = statistics.median(per_arrival[-50:])
                print(f"  {i + 1} arrivals, last 50: median {recent:.2f} s", flush=True)
            if i + 1 in checkpoints:
                modes = MODES if i + 1 <= a.full_until else tuple(m for m in MODES if m != "full")
                row = checkpoint(home, per_arrival, pool, scratch, a.repeats, modes)
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "next_arrival"}), flush=True)
                partial = document(rows, per_arrival, None, began) | {"complete": False}
                write("scale", partial, a.out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    ray_part = parallel(pool, a.ray, a.ray_rounds, plan, Stream) if a.ray else None
    doc = document(rows, per_arrival, ray_part, began) | {"complete": True}
    print(
        table(
            [
                "T",
                *(f"{m} s/arrival" for m in MODES),
                "audit ×T0",
                "route ms",
                "routing acc",
                "db MB",
            ],
            [
                [
                    r["T"],
                    *(
                        round(r["next_arrival"][m]["median_s"], 2)
                        if m in r["next_arrival"]
                        else "–"
                        for m in MODES
                    ),
                    round(doc["ratios_vs_first"]["audit"][str(r["T"])], 2),
                    round(r["route_one_ms"], 1),
                    r["routing_accuracy"] and round(r["routing_accuracy"], 3),
                    round(r["database_bytes"] / 1e6, 1),
                ]
                for r in rows
            ],
        )
    )
    if ray_part:
        print(
            f"Ray, 2 arrivals at once vs one in-process worker, {a.ray} independent arrivals: "
            f"{ray_part['speedup_median']:.2f}x (median of {a.ray_rounds} rounds); per arrival "
            f"{ray_part['arrival_median_s']['ray']:.2f} s vs "
            f"{ray_part['arrival_median_s']['in_process']:.2f} s"
        )
    path = write("scale", doc, a.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
