"""What every benchmark shares: the machine record, contenders run in subprocesses (so their
peak memory does not mix), alternating rounds, medians and ratios, and the results file.

A contender worker is a module run as `python -m bench.worker ROLE --spec JSON`; it prints one
JSON object on its last stdout line. `rounds()` runs every contender once per round, rotating
the order each round, so slow drift of the machine (another job, thermal state) falls on all of
them alike; ratios are taken within a round and then the median is quoted.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]


def machine() -> dict[str, Any]:
    """What the numbers were measured on: cores, processor, threads and library versions."""
    import transformers

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    try:
        import peft

        versions["peft"] = peft.__version__
    except ImportError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "threads": torch.get_num_threads(),
        **versions,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    """This process's resident memory now, in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def run_worker(role: str, spec: dict[str, Any], *, timeout: float = 3600) -> dict[str, Any]:
    """Run `python -m bench.worker ROLE` in a fresh process and return its JSON result."""
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, "-m", "bench.worker", role, "--spec", json.dumps(spec)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    lines = [x for x in done.stdout.strip().splitlines() if x.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(
            f"bench worker {role} failed (exit {done.returncode}):\n{done.stderr[-3000:]}"
        )
    return json.loads(lines[-1])


def rounds(
    contenders: Sequence[str],
    run_one: Callable[[str], dict[str, Any]],
    n_rounds: int,
    *,
    label: str = "",
) -> dict[str, list[dict[str, Any]]]:
    """Each contender once per round, the order rotated every round; results per contender."""
    out: dict[str, list[dict[str, Any]]] = {c: [] for c in contenders}
    order = list(contenders)
    for r in range(n_rounds):
        for c in order:
            t0 = time.perf_counter()
            out[c].append(run_one(c))
            print(
                f"  {label} round {r + 1}/{n_rounds} {c}: {time.perf_counter() - t0:.0f} s",
                file=sys.stderr,
                flush=True,
            )
        order = order[1:] + order[:1]
    return out


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def paired_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """Median of a[i] / b[i] (each pair measured side by side: the same round or step)."""
    return median([x / y for x, y in zip(a, b, strict=True)])


def write(name: str, doc: dict[str, Any], out: Path | None = None) -> Path:
    path = out or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table: columns as wide as their widest cell, numbers right-aligned."""
    cells = [[str(h) for h in header]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for k, row in enumerate(cells):
        lines.append(
            "  ".join(
                c.ljust(w) if (i == 0 or k == 0) else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths))
            )
        )
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # nan
            return "-"
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def write_between_markers(doc: Path, begin: str, end: str, body: str) -> None:
    """Replace what `doc` holds between its `begin` and `end` markers with `body`."""
    text = doc.read_text()
    if begin not in text or end not in text:
        raise SystemExit(f"{doc}: no {begin} ... {end} markers to write between")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    doc.write_text(f"{head}{begin}{body}{end}{tail}")
