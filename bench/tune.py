"""Does the per-task search pay? `--tune N` against the fixed defaults at equal training steps.

    python -m bench.tune                  # six catalog tasks and three held-out ones (hours)
    python -m bench.tune --quick          # a smoke run: two tasks, 2 trials of 3 steps

Per task: the search (N trials of T steps each, successive-halving pruning, `--pruner`; then
the winner's options trained again for F steps: `--tune-trial-steps T --steps F`) against the
fixed defaults trained for as many steps as the whole search used (its trials' steps after
pruning, plus the refit's), both from a random start, both scored once on the eval split the
search never saw. Catalog tasks (four classification on minilm, one generation on smollm2, one small local-file task) are where
the defaults were chosen; held-out tasks come from sources the catalog does not use and were
kept out of every choice. Targets: tuned >= default on every task, mean gain >= 1 point,
pruning saves >= 40% of the search's trial steps. Results: bench/results/tune.json, written
again after each task (`"complete": false` until the end; the suites are taken by turns), so a
stopped run keeps what it measured. Torch runs one thread (`CONTINUAL_THREADS`, unless set): the
numbers must not depend on how busy the machine was.

`--merge` adds this run's tasks to the results file (a task run again replaces its row; the
setup must be the same), re-reading it under a lock before each write, so runs of different
`--tasks` can share the machine's cores and one file; `complete` then says whether every task
of both suites is in it. A task too slow for the file's setup on this machine may run at a
smaller one (`--trials`, `--trial-steps`, `--steps`, `--batch-size`, `--max-length`) and join
with `--merge --own-setup`: its row then carries its setup and the docs' table marks it.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS, machine, table, write

CATALOG = (
    ("trec", "minilm"), ("sms_spam", "minilm"), ("vader_nyt", "minilm"), ("bbc_news", "minilm"),
    ("bbc_headlines", "smollm2"), ("rotten_tomatoes:file", "minilm"),
)  # fmt: skip
HELDOUT = (("hedge_wiki", "minilm"), ("sarcasm_headlines", "minilm"), ("fine_food", "minilm"))
MAX_TRAIN, MAX_EVAL = 1000, 300


def local_file(name: str, folder: Path) -> dict[str, str]:
    """A catalog set written out as JSONL files: the small local-file task."""
    from tasks.load import DataArgs, load_data

    data = load_data(DataArgs(dataset=name, max_train=200, max_eval=MAX_EVAL, seed=0), None)
    out = {}
    for split, rows in (("train", data.train), ("eval", data.eval)):
        path = folder / f"{name}-{split}.jsonl"
        path.write_text(
            "".join(json.dumps({"text": e.text, "label": e.target}) + "\n" for e in rows),
            encoding="utf-8",
        )
        out[split] = str(path)
    return out


def one(task: str, backbone: str, a: argparse.Namespace, folder: Path) -> dict[str, Any]:
    from continual.train import TrainConfig
    from pipelines.arrival.train import run_train
    from pipelines.settings import RegistryArgs
    from pipelines.tune import TuneSpace
    from tasks.load import DataArgs

    name, _, how = task.partition(":")
    if how == "file":
        files = local_file(name, folder)
        data = DataArgs(train=files["train"], eval=files["eval"], text_field="text",
                        target_field="label")  # fmt: skip
    else:
        data = DataArgs(dataset=name, max_train=MAX_TRAIN, max_eval=MAX_EVAL, seed=0)
    out: dict[str, Any] = {"task": task, "backbone": backbone}
    budget = 0
    for how_ in ("tuned", "default"):
        home = Path(tempfile.mkdtemp(prefix=f"bench-tune-{how_}-", dir=folder))
        reg = RegistryArgs(home=home, url=None, tracking_uri="none")
        steps = a.steps if how_ == "tuned" else budget  # the default: what the search used
        space = TuneSpace(
            trials=a.trials, starts=("random",), trial_steps=a.trial_steps, pruner=a.pruner
        )
        began = time.perf_counter()
        summary = run_train(
            backbone_name=backbone, data_args=data, name=f"{name}-{how_}", prefix_length=None,
            positions=None, config=TrainConfig(steps=steps, eval_every=max(1, steps // 4),
                                               **shape(a)),
            registry=reg, init="random", progress=False,
            tune=space if how_ == "tuned" else None,
        )  # fmt: skip
        if how_ == "tuned":
            found = summary["tune"]
            budget = found["steps"] + found.get("refit_steps", 0)
        out[how_] = {
            "score": summary["score"],
            "metric": summary["metric"],
            "steps": budget if how_ == "tuned" else summary["steps"],
            "seconds": time.perf_counter() - began,
            **({"search": summary["tune"]} if how_ == "tuned" else {}),
        }
        print(f"  {task} {how_}: {summary['score']:.4f} ({out[how_]['steps']} steps)", flush=True)
    search = out["tuned"]["search"]
    out["gain_points"] = 100 * (out["tuned"]["score"] - out["default"]["score"])
    out["pruning_saved"] = 1 - search["steps"] / (a.trials * a.trial_steps)
    out["chosen"] = search["best"]["params"]
    return out


def shape(a: argparse.Namespace) -> dict[str, int]:
    """The batch size and input length given on the command line (none: `TrainConfig`'s)."""
    given = {
        "batch_size": getattr(a, "batch_size", None),
        "max_length": getattr(a, "max_length", None),
    }
    return {k: v for k, v in given.items() if v is not None}


def threads() -> dict[str, int]:
    """Torch's thread count where `CONTINUAL_THREADS` set it to other than the bench's one."""
    n = int(os.environ.get("CONTINUAL_THREADS", "1"))
    return {} if n == 1 else {"threads": n}


def interleaved(suites: dict[str, tuple[tuple[str, str], ...]]):
    """(suite, task) taking the suites by turns, so a stopped run has tasks of each."""
    longest = max((len(ts) for ts in suites.values()), default=0)
    for k in range(longest):
        for suite, tasks in suites.items():
            if k < len(tasks):
                yield suite, tasks[k]


def document(a: argparse.Namespace, rows: dict[str, list[dict[str, Any]]], began: float) -> dict:
    """The results so far (written after each task: a stopped run keeps what it measured)."""
    return {
        "bench": "tune",
        "machine": machine(),
        "setup": {
            "trials": a.trials,
            "steps_per_trial": a.trial_steps,
            "refit_steps": a.steps,
            "pruner": a.pruner,
            "quick": a.quick,
            **shape(a),  # only when given, so files of the usual setup still merge
            **threads(),
        },
        "suites": rows,
        "summary": {
            suite: {
                "mean_gain_points": statistics.mean(r["gain_points"] for r in rs),
                "tuned_at_least_default": sum(r["gain_points"] >= 0 for r in rs),
                "tasks": len(rs),
                "pruning_saved_mean": statistics.mean(r["pruning_saved"] for r in rs),
            }
            for suite, rs in rows.items()
            if rs
        },
        "wall_seconds": time.perf_counter() - began,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--trial-steps", type=int, default=100, help="training steps per trial")
    ap.add_argument("--steps", type=int, default=600, help="the winner's refit steps")
    ap.add_argument("--pruner", default="halving", choices=("median", "halving", "none"))
    ap.add_argument("--quick", action="store_true", help="two tasks, 2 trials of 3 + 6 steps")
    ap.add_argument("--batch-size", type=int, help="every run's batch (default: TrainConfig's)")
    ap.add_argument("--max-length", type=int, help="inputs cut at N tokens (default: 128)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--tasks", help="only these tasks (comma-separated names as listed)")
    ap.add_argument("--merge", action="store_true", help="add the tasks to the results file")
    ap.add_argument(
        "--own-setup",
        action="store_true",
        help="with --merge: a file of another setup takes these rows, each marked with its own",
    )
    a = ap.parse_args(argv)
    # Training's numerics depend on torch's thread count, which each arrival otherwise picks
    # from the idle cores: two runs of this bench on a busy machine then train different prefixes
    # (hedge_wiki's default scored 72.3% in one run and 56.3% in the next). One thread, always.
    os.environ.setdefault("CONTINUAL_THREADS", "1")
    suites = {"catalog": CATALOG, "heldout": HELDOUT}
    if a.quick:
        suites = {"catalog": CATALOG[:1], "heldout": HELDOUT[:1]}
        a.trials, a.trial_steps, a.steps = 2, 3, 6
    if a.tasks:
        wanted = set(a.tasks.split(","))
        suites = {s: tuple(t for t in ts if t[0] in wanted) for s, ts in suites.items()}
    began = time.perf_counter()
    rows: dict[str, list[dict[str, Any]]] = {suite: [] for suite in suites}
    with tempfile.TemporaryDirectory(prefix="bench-tune-") as tmp:
        for suite, (task, backbone) in interleaved(suites):
            rows[suite].append(one(task, backbone, a, Path(tmp)))
            if a.merge:
                merged(a, rows)
            else:
                write("tune", document(a, rows, began) | {"complete": False}, a.out)
    # A subset (--tasks, --quick) is a partial run of the suites, whatever it finished.
    doc = document(a, rows, began) | {"complete": not (a.tasks or a.quick)}
    if a.merge:
        doc = merged(a, rows)
    print(
        table(
            ["suite", "task", "default", "tuned", "gain pts", "P", "lr", "pruning saved"],
            [
                [
                    suite,
                    r["task"],
                    round(r["default"]["score"], 4),
                    round(r["tuned"]["score"], 4),
                    round(r["gain_points"], 2),
                    r["chosen"]["prefix_length"],
                    f"{r['chosen']['lr']:.2g}",
                    f"{100 * r['pruning_saved']:.0f}%",
                ]
                for suite, rs in rows.items()
                for r in rs
            ],  # fmt: skip
        )
    )
    for suite, s in doc["summary"].items():
        print(
            f"{suite}: mean gain {s['mean_gain_points']:+.2f} points, tuned >= default on "
            f"{s['tuned_at_least_default']}/{s['tasks']}, pruning saved "
            f"{100 * s['pruning_saved_mean']:.0f}% of the search's steps"
        )
    print(
        f"wrote {a.out or RESULTS / 'tune.json'}"
        if a.merge
        else f"wrote {write('tune', doc, a.out)}"
    )
    return 0


def merged(a: argparse.Namespace, rows: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The results file with this run's task rows added (replacing earlier rows of the same
    tasks), read and written under a lock: runs of other tasks may be writing it too."""
    path = a.out or RESULTS / "tune.json"
    order = {t: i for i, (t, _) in enumerate(CATALOG + HELDOUT)}
    with open(Path(tempfile.gettempdir()) / "bench-tune.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        fresh = document(a, rows, time.perf_counter())
        old = json.loads(path.read_text()) if path.exists() else fresh
        own = old["setup"] != fresh["setup"]
        if own:
            if not getattr(a, "own_setup", False):
                raise SystemExit(
                    f"--merge: {path} was run with another setup: {old['setup']} "
                    "(--own-setup adds these rows marked with theirs)"
                )
            mark = {"setup": fresh["setup"], "machine": fresh["machine"]}
            rows = {s: [{**r, **mark} for r in rs] for s, rs in rows.items()}
        mine = {r["task"] for rs in rows.values() for r in rs}
        suites = {}
        for suite in ("catalog", "heldout"):
            kept = [r for r in old["suites"].get(suite, []) if r["task"] not in mine]
            suites[suite] = sorted(kept + rows.get(suite, []), key=lambda r: order[r["task"]])
        doc = document(a, suites, time.perf_counter()) | {"setup": old["setup"]}
        if own:  # the table's machine line stays the file's own
            doc["machine"] = old["machine"]
        doc.pop("wall_seconds")  # several sittings: each row keeps its own seconds
        machines = old.get("machines") or [old["machine"]]
        doc["machines"] = (
            machines if fresh["machine"] in machines else [*machines, fresh["machine"]]
        )
        have = {r["task"] for rs in suites.values() for r in rs}
        doc["complete"] = have >= set(order)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=1) + "\n")
    return doc


if __name__ == "__main__":
    raise SystemExit(main())
