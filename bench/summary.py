"""The speed benchmarks' committed JSON as Markdown tables, written into docs/BENCHMARKS.md
between its `<!-- tables:begin -->` and `<!-- tables:end -->` markers (so the document quotes
exactly what the JSON holds).

    python -m bench.summary            # rewrite the tables in docs/BENCHMARKS.md
    python -m bench.summary --print    # print them instead
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from bench.common import RESULTS, ROOT, write_between_markers
from bench.summary_search import cell as _cell
from bench.summary_search import machine_line as _machine
from bench.summary_search import md as _md
from bench.summary_search import methods, tune

DOC = ROOT / "docs" / "BENCHMARKS.md"
BEGIN, END = "<!-- tables:begin -->", "<!-- tables:end -->"


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def train_step(doc: dict[str, Any]) -> str:
    rows = []
    for name, s in doc["setups"].items():
        for c in ("ours", "peft", "full"):
            x = s["contenders"][c]
            rows.append(
                [
                    f"`{name}`" if c == "ours" else "",
                    c,
                    f"{1000 * x['median_step_seconds']:.0f}",
                    f"{x['examples_per_second']:.1f}",
                    f"{x['tokens_per_second']:.0f}",
                    f"{x['peak_rss_mb']:.0f}",
                    f"{x['trainable_params']:,}",
                ]
            )
    head = ["setup", "contender", "step ms", "examples/s", "tokens/s", "peak MB", "trainable"]
    ratios = [
        [
            f"`{name}`",
            f"**{s['ratio_ours_over_peft']:.2f}**",
            f"**{s['ratio_ours_over_full']:.2f}**",
            f"**{s['peak_memory_ratio_ours_over_full']:.2f}**",
            f"{s['peak_memory_above_imports_ratio_ours_over_full']:.2f}",
            f"{s['real_tokens_per_step']:.0f}",
        ]
        for name, s in doc["setups"].items()
    ]
    rhead = [
        "setup",
        "step ours/PEFT (≤ 0.85)",
        "step ours/full (≤ 0.5)",
        "peak memory ours/full (≤ 0.6)",
        "memory above imports",
        "real tokens/step",
    ]
    return "\n\n".join(["### Training step", _machine(doc), _md(head, rows), _md(rhead, ratios)])


def time_to_accuracy(doc: dict[str, Any]) -> str:
    rows = []
    for name, e in doc["runs"].items():
        for c, x in e["contenders"].items():
            ok = x["reached_every_round"]
            trainer = x["runs"][0].get("trainer")
            how = (
                f"batch {trainer['batch_size']}, warm-up {trainer['warmup']:g}"
                if trainer
                else "our defaults"
            )
            rows.append(
                [
                    f"`{name}`" if c == "ours" else "",
                    f"{100 * e['target']:.0f}%",
                    f"{c} ({how})",
                    f"{x['median_seconds_to_target']:.0f}" if ok else "not reached",
                    f"{x['median_steps_to_target']:.0f}" if ok else "–",
                    f"{100 * x['best_score']:.1f}%",
                    f"{max(r['seconds_total'] for r in x['runs']):.0f}",
                    e["rounds"],
                ]
            )
        for c, r in e.get("ratios", {}).items():
            text = f"**{r['ratio']:.2f}**" if "ratio" in r else f"**≤ {r['at_most']:.2f}**"
            rows.append(["", "", f"ours / {c} (≤ 0.7)", text, "", "", "", ""])
    head = ["run", "target", "contender", "seconds to target", "steps", "best", "ran s", "rounds"]
    notes = [f"`{name}`: {e['note']}." for name, e in doc["runs"].items() if e.get("note")]
    return "\n\n".join(["### Time to accuracy", _machine(doc), _md(head, rows), *notes])


def efficiency(doc: dict[str, Any]) -> str:
    rows = [
        [
            name,
            f"{r['batch_size']} × {r['mean_tokens_per_row']:.0f}",
            f"{r['median_step_seconds']:.2f}",
            f"{r['flops_per_step_median'] / 1e9:.0f}",
            f"{r['achieved_flops_median'] / 1e9:.0f}",
            f"{r['matmul_flops_median'] / 1e9:.0f}",
            f"**{100 * r['fraction_of_matmul']:.0f}%**",
        ]
        for name, r in doc["runs"].items()
    ]
    head = ["backbone", "batch", "step s", "GFLOP/step", "GFLOP/s", "matmul GFLOP/s", "(≥ 40%)"]
    return "\n\n".join(["### Machine efficiency", _machine(doc), _md(head, rows)])


def evaluation(doc: dict[str, Any]) -> str:
    rows = []
    for name, r in doc.get("rank_classification", {}).items():
        m = r["median_seconds"]
        rows.append(
            [
                f"rank classification, smollm2, {name} ({r['labels']} labels, {r['inputs']} inputs)",
                f"{m['shared_prompt']:.2f} s, prompt encoded once",
                f"{m['pass_per_label']:.2f} s, a pass per label",
                f"**{r['speedup_shared_over_per_label']:.2f}×** (≥ 2)",
                "yes" if r["predictions_equal"] else "**no**",
            ]
        )
    if "reevaluation" in doc:
        r = doc["reevaluation"]
        m = r["median_seconds"]
        rows.append(
            [
                f"re-evaluate 8 tasks, minilm ({r['inputs']} inputs)",
                f"{m['mixed_batches']:.2f} s, mixed-task batches",
                f"{m['per_task_loop']:.2f} s, a loop over tasks",
                f"{r['speedup_mixed_over_per_task']:.2f}×",
                "yes" if r["predictions_equal"] else "**no**",
            ]
        )
    if "serving" in doc:
        r = doc["serving"]
        m = r["median_seconds"]
        for who, label in (("ours", "our code"), ("peft", "PEFT, `set_adapter` per group")):
            rows.append(
                [
                    f"serve {r['requests']} requests of 8 tasks, micro-batches of "
                    f"{r['micro_batch']} ({r['tasks_per_micro_batch']:.1f} tasks each), minilm"
                    if who == "ours"
                    else "",
                    f"{m['ours_mixed']:.2f} s, one mixed pass each",
                    f"{m[who + '_grouped']:.2f} s, a pass per task, {label}",
                    f"**{r['speedup_mixed_over_' + who + '_grouped']:.2f}×** (≥ 2)",
                    ("yes" if r["outputs_equal_ours"] else "**no**")
                    if who == "ours"
                    else f"{100 * r['agreement_with_peft']:.1f}%",
                ]
            )
    head = ["what", "ours", "against", "speed-up", "same answers"]
    return "\n\n".join(["### Evaluation and serving", _machine(doc), _md(head, rows)])


def storage(doc: dict[str, Any]) -> str:
    rows = [
        [
            name,
            f"{r['backbone_bytes'] / 1e6:.1f} MB",
            f"{r['ours_bytes'] / 1e3:.0f} kB",
            f"{100 * r['ours_fraction_of_backbone']:.2f}%",
            f"{r['peft_adapter_bytes'] / 1e3:.0f} kB",
            f"{r['full_finetune_bytes'] / 1e6:.1f} MB",
        ]
        for name, r in doc["backbones"].items()
    ]
    head = ["backbone", "backbone", "ours per task", "of the backbone", "PEFT adapter", "full FT"]
    return "\n\n".join(["### Storage per task (P = 16)", _machine(doc), _md(head, rows)])


def ablation(doc: dict[str, Any]) -> str:
    names = list(doc["setups"])
    variants = list(doc["setups"][names[0]]["median_step_seconds"])
    rows = [
        [f"`{v}`"]
        + [
            f"{1000 * doc['setups'][n]['median_step_seconds'][v]:.0f} ms "
            f"({doc['setups'][n]['ratio_to_all'][v]:.2f}×)"
            for n in names
        ]
        for v in variants
    ]
    return "\n\n".join(
        [
            "### What each optimization gained (step time with it undone, ratio to `all`)",
            _machine(doc),
            _md(["variant", *[f"`{n}`" for n in names]], rows),
        ]
    )


def serve(doc: dict[str, Any]) -> str:
    rows = [
        [r["tasks"], r["clients"], r["batching"], f"{r['rps']:.1f}", f"{r['p50_ms']:.0f}",
         f"{r['p99_ms']:.0f}"]
        for r in doc["rows"]
    ]  # fmt: skip
    head = ["tasks", "clients", "batching", "requests/s", "p50 ms", "p99 ms"]
    ratios = [
        [s["tasks"], s["clients"], f"**{s['mixed_over_off']:.2f}**", f"{s['task_over_off']:.2f}",
         f"**{s['mixed_p99_over_p50']:.2f}**"]
        for s in doc["summary"]
    ]  # fmt: skip
    rhead = ["tasks", "clients", "mixed / off (≥ 3 at 32)", "task / off", "p99 / p50 (≤ 3 at 8)"]
    ready = ", ".join(f"{k} {v:.1f} s" for k, v in doc["ready_s"].items())
    setup = doc["setup"]
    text = (
        f"{setup['rounds']} rounds, modes in turn; one text per request, for a random task; "
        f"ready (start to the first 200 from /readyz, backbone cached, ≤ 10 s): {ready}."
    )
    cpu = [x["client_cpu_ms_per_request"] for k, r in doc["runs"].items() if k.endswith("/32")
           for x in r["mixed"]]  # fmt: skip
    if cpu:
        text += (
            f" The client shares the 2 cores: {min(cpu):.1f}-{max(cpu):.1f} ms of its own CPU "
            "a request at 32 clients (mixed)."
        )
    alone = doc.get("pass_alone")
    if alone:
        text += (
            f" The pass alone, in process: {alone['pass_ms_1']:.1f} ms for 1 input, "
            f"{alone['pass_ms_32']:.0f} ms for 32: batching can make 32 answers at most "
            f"{alone['max_speedup_32']:.2f}× faster on this CPU (the per-input compute stays)."
        )
    return "\n\n".join(
        ["### Serving over HTTP", _machine(doc), _md(head, rows), _md(rhead, ratios), text]
    )


def scale(doc: dict[str, Any]) -> str:
    modes = ("full", "audit", "proof")
    ratios = doc["ratios_vs_first"]
    rows = [
        [r["T"], *(_cell(r["next_arrival"].get(m, {}).get("median_s")) for m in modes),
         f"**{ratios['audit'][str(r['T'])]:.2f}**", _cell(ratios["full"].get(str(r["T"]))),
         _cell(r.get("audit_arrival_median_last_10_s")),
         f"{r['route_one_ms']:.0f}", f"{r['router_build_s']:.1f}",
         r.get("router", "logistic"),
         "-" if r["routing_accuracy"] is None else f"{100 * r['routing_accuracy']:.1f}",
         f"{r['database_bytes'] / 1e6:.1f}", f"{r['stream_seconds'] / 60:.1f}"]
        for r in doc["checkpoints"]
    ]  # fmt: skip
    head = ["T", "full s", "audit s", "proof s", "audit ×T₀ (≤ 2 at 1,000)", "full ×T₀",
            "the stream's own audited arrivals s (last 10)", "route 1 input ms", "router build s", "router", "routing acc %", "db MB",
            "stream min"]  # fmt: skip
    setup = doc["setup"]
    text = (
        f"One more arrival after T tasks, per mode (median of the probes; a warm-up arrival first), "
        f"in copies of one stream built under `audit` on {setup['backbone']}: synthetic tasks of "
        f"two labels of a catalog set each, 24 training and 50 eval examples, "
        f"{setup['train']['steps']} steps, P = {setup['prefix_length']}; MLflow off, no report. "
        "The stream's own arrivals run in one long-lived worker (what a worker serving the "
        "stream sees: prefixes it loaded before are kept); a probe runs in a fresh one. "
        "Routing accuracy is over the last arrival's sampled tasks; tasks drawn from the same "
        "catalog set share their inputs' distribution, so routing cannot tell them apart."
    )
    if any("full" not in r["next_arrival"] for r in doc["checkpoints"]):
        text += " –: `full` not probed there (`--full-until`; it grows linearly with T)."
    if setup.get("stopped_at"):
        text += f" The run {setup['stopped_at']} (– : not probed)."
    parts = ["### Cost of an arrival against the stream's length", _machine(doc)]
    parts += [_md(head, rows), text]
    ray = doc.get("ray_parallel")
    if ray:
        where = doc.get("ray_parallel_from")
        parts.append(
            (f"From {where}: " if where else "")
            + f"Ray, {ray['arrivals']} independent arrivals (each its own stream) on a local Ray "
            f"instance, 2 at once with 1 CPU each, against one in-process worker: "
            f"**{ray['speedup_median']:.2f}×** (median of {len(ray['rounds']['ray'])} rounds, "
            f"alternating); an arrival's own time {ray['arrival_median_s']['ray']:.2f} s on Ray "
            f"against {ray['arrival_median_s']['in_process']:.2f} s in process."
        )
    return "\n\n".join(parts)


PARTS = {
    "train_step": train_step,
    "time_to_accuracy": time_to_accuracy,
    "efficiency": efficiency,
    "evaluation": evaluation,
    "storage": storage,
    "ablation": ablation,
    "serve": serve,
    "scale": scale,
    "tune": tune,
    "methods": methods,
}


def render() -> str:
    out = []
    for name, fn in PARTS.items():
        doc = _load(name)
        out.append(fn(doc) if doc else f"### {name}\n\n(not run yet: `python -m bench.{name}`)")
    return "\n\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--print", action="store_true")
    a = ap.parse_args(argv)
    tables = render()
    if a.print:
        print(tables)
        return 0
    write_between_markers(DOC, BEGIN, END, f"\n\n{tables}\n\n")
    print(f"wrote the tables into {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
