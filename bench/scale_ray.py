"""The Ray part of `bench.scale`: the same queue of independent arrivals run by one in-process
worker and by a local Ray instance, 2 arrivals at once."""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def parallel(
    pool: dict[str, Any], n: int, rounds: int, plan: Callable[..., Any], stream: Callable[..., Any]
) -> dict[str, Any]:
    """The same queue of `n` independent arrivals (each its own stream) run by one in-process
    worker and by a local Ray instance with 2 arrivals at once (1 CPU each), alternating which
    goes first each round; wall time, and each arrival's own seconds."""
    from pipelines.arrival import ray_executor
    from pipelines.arrival.queueing import enqueue_arrival
    from pipelines.settings import RegistryArgs

    out: dict[str, list[Any]] = {"in_process": [], "ray": []}
    for r in range(rounds):
        order = ["in_process", "ray"] if r % 2 == 0 else ["ray", "in_process"]
        for how in order:
            scratch = Path(tempfile.mkdtemp(prefix="bench-scale-ray-"))
            try:
                args = RegistryArgs(home=scratch / "home", url=None, tracking_uri="none")
                with args.open() as reg:
                    for i in range(n):
                        p = plan(700_000 + i, scratch, pool, "audit")
                        enqueue_arrival(reg, plan=p, backbone="minilm", stream=f"s{i}")
                began = time.perf_counter()
                if how == "ray":
                    opts = ray_executor.RayOptions(cpus=1, parallel=2, report=False)
                    got = ray_executor.serve(
                        args, opts, until_empty=True, lease_s=600, say=lambda _: None
                    )
                else:
                    worker = stream(scratch / "home").worker
                    got = worker.serve(until_empty=True)
                wall = time.perf_counter() - began
                assert all(o["state"] == "done" for o in got), got
                out[how].append({"wall_s": wall, "arrival_s": [o["seconds"] for o in got]})
                print(f"  {how}: {wall:.1f} s for {n} arrivals", flush=True)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
    walls = {k: [x["wall_s"] for x in v] for k, v in out.items()}
    ratios = [a / b for a, b in zip(walls["in_process"], walls["ray"])]
    per = {k: statistics.median([s for x in v for s in x["arrival_s"]]) for k, v in out.items()}
    return {
        "arrivals": n,
        "rounds": out,
        "speedup_median": statistics.median(ratios),
        "arrival_median_s": per,
        "ray_overhead_per_arrival_s": per["ray"] - per["in_process"],
    }
