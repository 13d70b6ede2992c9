"""bench.summary's tables for the search and module benches (`bench.tune`, `bench.methods`)."""

from __future__ import annotations

from typing import Any


def md(head: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_line(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    return (
        f"*{m['cores']} cores ({m.get('cpu', '?')}), {m['threads']} torch threads, torch "
        f"{m['torch']}, transformers {m.get('transformers', '?')}, peft {m.get('peft', '-')}; "
        f"`python -m bench.{doc['bench']}`, [JSON](../bench/results/{doc['bench']}.json)*"
    )


def cell(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def _trials_words(st: dict[str, Any]) -> str:
    """A bench.tune setup's search in words: "8 trials of 100 steps (halving pruning)"."""
    return (
        f"{st['trials']} trials of {st['steps_per_trial']} steps "
        f"({st.get('pruner', 'median')} pruning)"
    )


def _setup_words(st: dict[str, Any]) -> str:
    """A bench.tune setup in words: its trials, refit, pruner and any batch or length given."""
    extra = f", batch {st['batch_size']}" if "batch_size" in st else ""
    extra += f", inputs cut at {st['max_length']} tokens" if "max_length" in st else ""
    extra += f", {st['threads']} torch threads" if "threads" in st else ""
    return f"{_trials_words(st)}, refit {st['refit_steps']} steps{extra}"


def tune(doc: dict[str, Any]) -> str:
    """bench.tune: the search against the defaults at the steps it used, per suite."""
    st = doc["setup"]
    rows, own = [], []
    for suite, rs in doc["suites"].items():
        for r in rs:
            c = r["chosen"]
            mark = ""
            if "setup" in r:  # run at a setup of its own (`bench.tune --merge --own-setup`)
                own.append(f"`{r['task']}`: {_setup_words(r['setup'])}")
                mark = " " + "†" * len(own)
            rows.append([
                suite, f"`{r['task']}` ({r['backbone']})", f"{r['default']['score']:.4f}",
                f"{r['tuned']['score']:.4f}", f"**{r['gain_points']:+.2f}**",
                f"P {c['prefix_length']}, lr {c['lr']:.2g}, width {c['reparam_hidden']}",
                f"{100 * r['pruning_saved']:.0f}%", f"{r['tuned']['steps']}{mark}",
            ])  # fmt: skip
    lines = [
        "### tune (per-task search against the defaults at equal steps)",
        "",
        f"{_trials_words(st)}, the winner's options trained again for {st['refit_steps']} "
        "steps; the "
        "defaults trained for the steps the whole search used."
        + ("" if doc.get("complete") else " **Partial run**: the tasks below only."),
        "",
        md(
            [
                "suite",
                "task",
                "default",
                "tuned",
                "gain (pts)",
                "chosen",
                "pruning saved",
                "steps each",
            ],
            rows,
        ),  # fmt: skip
        "",
    ]
    for k, words in enumerate(own, 1):
        lines.append(
            f"{'†' * k} At a setup of its own, {words}; its gain and pruning count in the "
            "means below like the others'."
        )
    if own:
        lines.append("")
    for suite, sm in doc["summary"].items():
        lines.append(
            f"- {suite}: mean gain {sm['mean_gain_points']:+.2f} points (target ≥ +1), tuned ≥ "
            f"default on {sm['tuned_at_least_default']}/{sm['tasks']} (target all), pruning "
            f"saved {100 * sm['pruning_saved_mean']:.0f}% (target ≥ 40%)"
        )
    return "\n".join(lines + ["", machine_line(doc)])


def methods(doc: dict[str, Any]) -> str:
    """bench.methods: every module kind beside full fine-tuning, per backbone."""
    lines = [
        "### methods (every module kind beside full fine-tuning)",
        "",
        f"Each method trained {doc['setup']['steps']} steps at each learning rate of a small "
        "sweep (widened by one rate where the first sweep's best was at its top; every run is "
        "in the JSON), the rate with the best validation kept; eval scores (accuracy, ROUGE-L "
        "F1 for a generation task) with the rate chosen in brackets. Efficiency on the "
        "backbone's first task: trainable parameters, bytes stored per task, median training "
        "step (methods interleaved), training memory above the loaded backbone and data, "
        "mixed-batch serving of the suite's classification tasks (none where it has one)."
        + ("" if doc.get("complete") else " **Partial run.**"),
    ]
    for name, rows in doc["backbones"].items():
        tasks = rows["tasks"]
        eff = rows.get("efficiency", {})
        kinds = [m for m in ("full", "prefix", "lora", "prompt", "ptuning", "ia3", "bitfit")
                 if any(m in t["methods"] for t in tasks.values())]  # fmt: skip
        metric = {t: next(iter(v["methods"].values()))["metric"] for t, v in tasks.items()}
        one_metric = len(set(metric.values())) == 1  # a mean over accuracy and ROUGE says nothing
        body = []
        for m in kinds:
            scores = [t["methods"][m]["eval"] for t in tasks.values() if m in t["methods"]]
            one = next(t["methods"][m] for t in tasks.values() if m in t["methods"])
            mem = eff.get("memory", {}).get(m)
            body.append([
                m,
                *[f"{t['methods'][m]['eval']:.3f} ({t['methods'][m]['lr']:g})"
                  if m in t["methods"] else "-" for t in tasks.values()],
                f"**{sum(scores) / len(scores):.3f}**" if one_metric else "-",
                f"{100 * one['trainable_params'] / rows['n_params']:.3f}",
                f"{one['stored_bytes'] / 1024:,.0f}",
                cell(1000 * eff["step_seconds"][m]) if m in eff.get("step_seconds", {}) else "-",
                f"{mem['peak_rss_mb'] - mem['rss_loaded_mb']:.0f}" if mem else "-",
                cell(eff.get("serving_items_per_second", {}).get(m)),
            ])  # fmt: skip
        head = ["method", *[f"`{t}`{' (held out)' if v['group'] == 'heldout' else ''}"
                            f"{'' if metric[t] == 'accuracy' else f' ({metric[t]})'}"
                            for t, v in tasks.items()],
                "mean", "trainable %", "KB / task", "step ms", "train MB", "serve / s"]  # fmt: skip
        widths = sorted({len(r["sweep"]) for t in tasks.values() for r in t["methods"].values()})
        rates = f"{widths[0]}" if len(widths) == 1 else f"{widths[0]}-{widths[-1]}"
        lines += ["", f"**{name}** ({rows['n_params'] / 1e6:.1f}M parameters; {rates} rates "
                  "per method and task)", "", md(head, body)]  # fmt: skip
        for m, why in rows.get("not_applicable", {}).items():
            lines.append(f"\n{m}: not run ({why})")
    return "\n".join(lines + ["", machine_line(doc)])
