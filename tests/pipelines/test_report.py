"""The report: report.json's numbers, report.md's sections, a self-contained report.html that a
real headless Chromium renders with its images, and a mismatch flagged loudly everywhere."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pipelines.cli import main

KEYS = ("R", "acc", "bwt", "fwt", "forgetting_max", "forgetting_last")


def run(*argv: str | Path) -> tuple[int, dict]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv] + ["--json", "--quiet", "--tracking-uri", "none"])
    return code, json.loads(out.getvalue() or "{}")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_encoder_dir, sentiment) -> Path:
    """Two arrivals with sequential fine-tuning beside them."""
    folder = tmp_path_factory.mktemp("report")
    arrivals = []
    for task, labels, seed in (("alpha", ("positive", "negative"), 1), ("beta", ("yes", "no"), 2)):
        for split, n in (("train", 40), ("eval", 20)):
            rows = sentiment(n, seed=seed + (split == "eval") * 100, labels=labels)
            (folder / f"{task}-{split}.jsonl").write_text(
                "".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8"
            )
        arrivals.append(f"  - {{name: {task}, train: {task}-train.jsonl, eval: {task}-eval.jsonl}}")
    (folder / "stream.yaml").write_text(
        f"backbone: {tiny_encoder_dir}\n"
        "defaults: {steps: 12, lr: 1.0e-2, prefix_length: 4, eval_every: 6, batch_size: 8}\n"
        "baselines: [sequential-ft]\narrivals:\n" + "\n".join(arrivals) + "\n"
    )
    code, out = run("stream", "run", folder / "stream.yaml", "--home", folder / "home")
    assert code == 0, out
    return folder / "home"


def test_report_json_holds_every_method_as_numbers(workspace: Path) -> None:
    doc = json.loads((workspace / "report" / "report.json").read_text())
    assert list(doc["methods"]) == ["prefix", "sequential-ft"]
    for m in doc["methods"].values():
        assert set(KEYS) <= set(m)
        assert len(m["R"]) == 2 and all(len(row) == 2 for row in m["R"])
        assert m["R"][0][1] is None  # undefined above the diagonal
        assert all(isinstance(m[k], float) for k in KEYS[1:])
    assert doc["methods"]["prefix"]["bwt"] == 0.0
    assert "Chaudhry" in doc["metric_definitions"]["forgetting_max"]
    assert "Avalanche" in doc["metric_definitions"]["forgetting_last"]
    assert "GEM" in doc["metric_definitions"]["bwt"]
    task = doc["tasks"][0]
    assert task["stored_bytes"] < doc["backbone"]["bytes"] and task["init"] == "auto"
    assert task["init_strategy"] == "random"  # the first task has no earlier one to start from


def test_report_md_has_every_section(workspace: Path) -> None:
    md = (workspace / "report" / "report.md").read_text()
    for heading in (
        "## Metrics",
        "## Accuracy matrices",
        "### prefix",
        "### sequential-ft",
        "## Stored bytes per task",
        "## Initialization lineage",
        "## No-forgetting evidence",
    ):
        assert heading in md
    assert "MISMATCH" not in md


def test_report_command_writes_elsewhere_and_prints_the_table(workspace, tmp_path) -> None:
    code, out = run("report", "--home", workspace, "--out", tmp_path / "r")
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == [
        "report.html",
        "report.json",
        "report.md",
    ]
    assert out["report"]["ok"] and "prefix" in out["report"]["table"]
    assert set(out["report"]["metrics"]["prefix"]) >= {"acc", "bwt", "fwt"}


def test_the_html_is_self_contained(workspace: Path) -> None:
    html = (workspace / "report" / "report.html").read_text()
    sources = re.findall(r'src="([^"]*)"', html)
    assert len(sources) == 3 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r'(href|src)="(https?:|file:|/)', html)


def test_a_mismatch_is_flagged_loudly(workspace: Path, tmp_path: Path) -> None:
    copy = tmp_path / "home"
    shutil.copytree(workspace, copy)
    evidence = copy / "stream" / "evidence" / "0001.json"
    doc = json.loads(evidence.read_text())
    doc["fingerprint_after_arrival"] = "0" * 64
    evidence.write_text(json.dumps(doc))
    code, out = run("report", "--home", copy)
    assert code == 1 and out["report"]["ok"] is False
    html = (copy / "report" / "report.html").read_text()
    assert "class='alarm'" in html and "MISMATCH" in html
    assert "⚠ MISMATCH" in (copy / "report" / "report.md").read_text()


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return name
    pytest.skip(
        "chromium is not installed and could not be installed here; .ci/run installs it "
        "(apt-get install -y chromium)"
    )


def _headless(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_chromium_renders_the_report_with_its_images(workspace: Path, tmp_path: Path) -> None:
    browser = _chromium()
    page = (workspace / "report" / "report.html").resolve().as_uri()
    dom = _headless(browser, tmp_path / "p1", "--dump-dom", page)
    assert dom.returncode == 0, dom.stderr[-2000:]
    images = re.findall(r'<img[^>]*src="data:image/png;base64,([A-Za-z0-9+/=]*)"', dom.stdout)
    assert len(images) == 3 and all(len(b) > 1000 for b in images)
    assert "Continual-learning report" in dom.stdout

    shot = tmp_path / "shot.png"
    done = _headless(
        browser, tmp_path / "p2", f"--screenshot={shot}", "--window-size=1200,2000", page
    )
    assert done.returncode == 0 and shot.stat().st_size > 0, done.stderr[-2000:]
    from PIL import Image

    pixels = Image.open(shot).convert("RGB")
    assert pixels.size == (1200, 2000)
    colours = pixels.getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 200  # not blank: text, tables and plots
    # the heatmaps' colours: strongly saturated pixels that text and tables do not have
    saturated = sum(n for n, (r, g, b) in colours if max(r, g, b) - min(r, g, b) > 100)
    assert saturated > 5000
