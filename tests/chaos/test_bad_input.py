"""Bad input, across the CLI and stream files: each case must end with one error line that
names the input (the file, row, field or option), a non-zero exit, no traceback, and nothing
written to the workspace (every file and every database row as before).

Cases run in this process (`pipelines.cli.main`) over a copy of a workspace holding two tiny
tasks, t1 and t2, learnt in stream `s`. The HTTP API's cases are in test_bad_requests.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.chaos.conftest import changes, workspace_state

pytestmark = pytest.mark.slow

MAX_LINE = 400  # an error line that echoes a huge input is itself a defect


@dataclass(frozen=True)
class Ctx:
    home: Path
    files: Path
    encoder: Path
    decoder: Path

    def fmt(self, arg: str) -> str:
        return arg.format(H=self.home, F=self.files, E=self.encoder, D=self.decoder)


TRAIN = "train --backbone {E} --name t9 --train {F}/good-train.jsonl --eval {F}/good-eval.jsonl"
LEARN = "learn --backbone {E} --stream s --train {F}/good-train.jsonl --eval {F}/good-eval.jsonl"


def _data(rows: int) -> str:
    words = ("good", "bad")
    lines = [json.dumps({"text": f"the film was {words[i % 2]}", "label": ("positive", "negative")[i % 2]}) for i in range(rows)]  # fmt: skip
    return "\n".join(lines) + "\n"


def write_files(folder: Path) -> None:
    """Every bad file the cases name, beside a good train/eval pair."""
    folder.mkdir(parents=True, exist_ok=True)
    good = _data(32)
    text: dict[str, str | bytes] = {
        "good-train.jsonl": good,
        "good-eval.jsonl": _data(8),
        "bad-json.jsonl": good.splitlines()[0] + "\n{bad json\n",
        "latin1.jsonl": '{"text": "caf\xe9 good", "label": "positive"}\n'.encode("latin-1"),
        "utf16.jsonl": good.encode("utf-16"),
        "empty.jsonl": "",
        "blank.jsonl": "\n   \n\n",
        "no-label.jsonl": '{"text": "good"}\n' * 4,
        "no-text.jsonl": '{"label": "positive"}\n' * 4,
        "label-list.jsonl": '{"text": "good", "label": ["positive"]}\n' * 4,
        "text-null.jsonl": '{"text": null, "label": "positive"}\n' * 4,
        "text-object.jsonl": '{"text": {"a": 1}, "label": "positive"}\n' * 4,
        "not-object.jsonl": "[1, 2, 3]\n" * 4,
        "huge-line.jsonl": "x" * 5_000_000 + "\n",
        "binary.jsonl": bytes(range(256)) * 64,
        "one-label.jsonl": '{"text": "the film was good", "label": "positive"}\n' * 16,
        "unseen-labels.jsonl": '{"text": "the film was good", "label": "neutral"}\n' * 8,
        "ragged.csv": "text,label\ngood,positive\nbad,negative,extra\n",
        "no-header.csv": "good,positive\nbad,negative\n",
        "sheet.xlsx": b"PK\x03\x04 not really a spreadsheet",
        "array.json": '{"rows": [{"text": "good", "label": "positive"}]}',
        "stream-syntax.yaml": "backbone: {E}\narrivals: [\n",
        "stream-list.yaml": "- backbone\n- arrivals\n",
        "stream-no-backbone.yaml": "arrivals:\n  - {name: t9, train: good-train.jsonl}\n",
        "stream-no-arrivals.yaml": "backbone: {E}\narrivals: []\n",
        "stream-no-name.yaml": "backbone: {E}\narrivals:\n  - {train: good-train.jsonl}\n",
        "stream-twice.yaml": "backbone: {E}\narrivals:\n  - {name: t9, train: good-train.jsonl}\n  - {name: t9, train: good-train.jsonl}\n",
        "stream-typo.yaml": "backbone: {E}\narrivals:\n  - {name: t9, train: good-train.jsonl, stpes: 5}\n",
        "stream-steps.yaml": "backbone: {E}\ndefaults: {steps: -3}\narrivals:\n  - {name: t9, train: good-train.jsonl}\n",
        "stream-steps-word.yaml": "backbone: {E}\ndefaults: {steps: ten}\narrivals:\n  - {name: t9, train: good-train.jsonl}\n",
        "stream-baseline.yaml": "backbone: {E}\nbaselines: [magic-ft]\narrivals:\n  - {name: t9, train: good-train.jsonl}\n",
        "stream-baseline-twice.yaml": "backbone: {E}\nbaselines: [replay, replay]\narrivals:\n  - {name: t9, train: good-train.jsonl}\n",
        "stream-missing-file.yaml": "backbone: {E}\narrivals:\n  - {name: t9, train: nope.jsonl}\n",
        "stream-traversal.yaml": "backbone: {E}\narrivals:\n  - {name: ../t9, train: good-train.jsonl}\n",
        "stream-bad-data.yaml": "backbone: {E}\narrivals:\n  - {name: t9, train: bad-json.jsonl}\n",
        "stream-case.yaml": "name: s\nbackbone: {E}\narrivals:\n  - {name: t1, train: good-train.jsonl}\n  - {name: t2, train: good-train.jsonl}\n  - {name: T1, train: good-train.jsonl}\n",
        "stream-reorder.yaml": "name: s\nbackbone: {E}\narrivals:\n  - {name: t2, train: good-train.jsonl}\n  - {name: t1, train: good-train.jsonl}\n",
        "stream-module.yaml": "backbone: {E}\narrivals:\n  - {name: t9, train: good-train.jsonl, module: {kind: lora, rank: 0}}\n",
        # the second arrival cannot run on the backbone: refused before the first one trains
        "stream-late-prefix.yaml": "backbone: {E}\narrivals:\n  - {name: t8, train: good-train.jsonl}\n  - {name: t9, train: good-train.jsonl, prefix_length: 100000}\n",
        "stream-late-lora.yaml": "backbone: {E}\narrivals:\n  - {name: t8, train: good-train.jsonl}\n  - {name: t9, train: good-train.jsonl, module: {kind: lora, targets: [nowhere]}}\n",
        "stream-late-tune.yaml": "backbone: {E}\narrivals:\n  - {name: t8, train: good-train.jsonl}\n  - {name: t9, train: good-train.jsonl, tune: {trials: 2, lengths: [100000]}}\n",
        "stream-no-model.yaml": "backbone: /nonexistent/no-model\narrivals:\n  - {name: t9, train: good-train.jsonl}\n",
        "stream-binary.yaml": b"\x00\x01\x02\xff\xfe",
        "stream-empty.yaml": "",
    }
    for name, content in text.items():
        if isinstance(content, str):
            content = content.encode()
        (folder / name).write_bytes(content)
    (folder / "import-garbage").mkdir(exist_ok=True)
    (folder / "import-garbage" / "adapter_config.json").write_text("{not json")
    (folder / "import-garbage" / "adapter_model.safetensors").write_bytes(b"\x00" * 64)
    (folder / "import-empty").mkdir(exist_ok=True)


def _patch_streams(folder: Path, encoder: Path) -> None:
    for path in folder.glob("stream-*.yaml"):
        raw = path.read_bytes()
        if b"{E}" in raw:
            path.write_bytes(raw.replace(b"{E}", str(encoder).encode()))


#: (case id, argv, a word the error line must contain). `{H}` the workspace, `{F}` the files,
#: `{E}` the tiny encoder, `{D}` the tiny decoder.
CASES: list[tuple[str, str, str]] = [
    # --- data files
    ("train file missing", "train --backbone {E} --name t9 --train {F}/nope.jsonl", "nope.jsonl"),
    ("train file is a folder", "train --backbone {E} --name t9 --train {F}", "{F}"),
    ("malformed JSONL row", "train --backbone {E} --name t9 --train {F}/bad-json.jsonl", "row 2"),
    ("not UTF-8", "train --backbone {E} --name t9 --train {F}/latin1.jsonl", "UTF-8"),
    ("UTF-16 file", "train --backbone {E} --name t9 --train {F}/utf16.jsonl", "utf16.jsonl"),
    ("empty file", "train --backbone {E} --name t9 --train {F}/empty.jsonl", "empty.jsonl"),
    ("only blank lines", "train --backbone {E} --name t9 --train {F}/blank.jsonl", "blank.jsonl"),
    ("label field missing", "train --backbone {E} --name t9 --train {F}/no-label.jsonl", "label"),
    ("text field missing", "train --backbone {E} --name t9 --train {F}/no-text.jsonl", "text"),
    ("label is a list", "train --backbone {E} --name t9 --train {F}/label-list.jsonl", "row 1"),
    ("text is null", "train --backbone {E} --name t9 --train {F}/text-null.jsonl", "text"),
    ("text is an object", "train --backbone {E} --name t9 --train {F}/text-object.jsonl", "text"),
    ("row not an object", "train --backbone {E} --name t9 --train {F}/not-object.jsonl", "row 1"),
    ("5 MB garbage line", "train --backbone {E} --name t9 --train {F}/huge-line.jsonl", "row 1"),
    ("binary file", "train --backbone {E} --name t9 --train {F}/binary.jsonl", "binary.jsonl"),
    ("one label only", "train --backbone {E} --name t9 --train {F}/one-label.jsonl", "label"),
    ("eval labels unseen", TRAIN.replace("good-eval", "unseen-labels"), "neutral"),
    ("ragged CSV", "train --backbone {E} --name t9 --train {F}/ragged.csv", "row"),
    (
        "CSV without header",
        "train --backbone {E} --name t9 --train {F}/no-header.csv",
        "no-header.csv",
    ),  # fmt: skip
    ("unsupported file type", "train --backbone {E} --name t9 --train {F}/sheet.xlsx", ".xlsx"),
    ("JSON not a list", "train --backbone {E} --name t9 --train {F}/array.json", "array.json"),
    ("text field not in file", TRAIN + " --text-field sentence", "sentence"),
    ("label and target field", TRAIN + " --label-field label --target-field label", "argument"),
    (
        "unknown catalog dataset",
        "train --backbone {E} --name t9 --dataset no_such_set",
        "no_such_set",
    ),  # fmt: skip
    # --- options
    ("negative steps", TRAIN + " --steps -5", "steps"),
    ("zero steps", TRAIN + " --steps 0", "steps"),
    ("steps not a number", TRAIN + " --steps ten", "--steps"),
    ("negative lr", TRAIN + " --lr -1", "lr"),
    ("lr nan", TRAIN + " --lr nan", "lr"),
    ("lr inf", TRAIN + " --lr inf", "lr"),
    ("zero batch size", TRAIN + " --batch-size 0", "batch_size"),
    ("zero prefix length", TRAIN + " --prefix-length 0", "prefix"),
    ("prefix longer than the context", TRAIN + " --prefix-length 100000", "100000"),
    ("max length 2", TRAIN + " --max-length 2", "max_length"),
    ("negative patience", TRAIN + " --patience -1", "patience"),
    ("zero eval-every", TRAIN + " --eval-every 0", "eval_every"),
    ("negative max-train", TRAIN + " --max-train -4", "max"),
    ("lora rank 0", TRAIN + " --module lora --lora-rank 0", "rank"),
    ("lora option on a prefix", TRAIN + " --lora-rank 4", "--lora-rank"),
    ("unknown lora target", TRAIN + " --module lora --lora-targets nowhere", "nowhere"),
    ("unknown module", TRAIN + " --module adapterz", "--module"),
    # --- names
    ("name with ../", TRAIN.replace("t9", "../evil"), "../evil"),
    ("name with a slash", TRAIN.replace("t9", "a/b"), "a/b"),
    ("empty name", TRAIN.replace("--name t9", "--name ''"), "name"),
    ("name of 65 characters", TRAIN.replace("t9", "n" * 65), "name"),
    ("SQL in a name", TRAIN.replace("t9", '"x\';DROP TABLE tasks;--"'), "DROP"),
    ("name differs only in case", TRAIN.replace("t9", "T1"), "t1"),
    ("name taken", TRAIN.replace("t9", "t1"), "t1"),
    # --- backbones
    ("backbone missing", TRAIN.replace("{E}", "{F}/no-model"), "no-model"),
    ("backbone folder without a model", TRAIN.replace("{E}", "{F}/import-empty"), "import-empty"),
    ("prefix of another backbone", "predict --task t1 --backbone {D} good", "t1"),
    # --- learn, predict, evaluate
    ("learn a task already in the stream", LEARN + " --name t1", "t1"),
    ("learn under a case twin", LEARN + " --name T2", "t2"),
    (
        "learn into a bad stream name",
        LEARN.replace("--stream s", "--stream ../x") + " --name t9",
        "../x",
    ),  # fmt: skip
    ("adopt an unknown task", "learn --stream s --task nosuch", "nosuch"),
    ("queue a prefix past the context", LEARN + " --name t9 --queue --prefix-length 100000", "128"),
    ("predict an unknown task", "predict --task nosuch good", "nosuch"),
    ("predict a path as task", "predict --task ../../etc good", "../../etc"),
    ("predict an unknown prefix id", "predict --prefix 99999 good", "99999"),
    ("evaluate on malformed data", "evaluate --task t1 --eval {F}/bad-json.jsonl", "row 2"),
    ("evaluate on unseen labels", "evaluate --task t1 --eval {F}/unseen-labels.jsonl", "neutral"),
    # --- registry
    ("show an unknown task", "registry show nosuch", "nosuch"),
    ("history of a path", "registry history ../x", "../x"),
    ("import a missing folder", "registry import {F}/no-folder", "no-folder"),
    ("import an empty folder", "registry import {F}/import-empty", "import-empty"),
    ("import garbage", "registry import {F}/import-garbage", "import-garbage"),
    ("export an unknown task", "registry export nosuch --format peft --out {F}/out", "nosuch"),
    (
        "export onto a file",
        "registry export t1 --format peft --out {F}/good-train.jsonl",
        "good-train.jsonl",
    ),  # fmt: skip
    ("export a missing version", "registry export t1 --version 99 --format peft --out {F}/o", "99"),
    # --- jobs and tokens
    ("show a missing job", "jobs show 99999", "99999"),
    ("cancel a missing job", "jobs cancel 99999", "99999"),
    ("retry a missing job", "jobs retry 99999", "99999"),
    ("revoke a missing token", "tokens revoke 99999", "99999"),
    ("token of an unknown scope", "tokens create --scope admin", "admin"),
    # --- stream files
    ("stream file missing", "stream run {F}/no-stream.yaml", "no-stream.yaml"),
    ("stream YAML syntax", "stream run {F}/stream-syntax.yaml", "stream-syntax.yaml"),
    ("stream not a mapping", "stream run {F}/stream-list.yaml", "stream-list.yaml"),
    ("stream without backbone", "stream run {F}/stream-no-backbone.yaml", "backbone"),
    ("stream without arrivals", "stream run {F}/stream-no-arrivals.yaml", "arrivals"),
    ("arrival without a name", "stream run {F}/stream-no-name.yaml", "name"),
    ("arrival listed twice", "stream run {F}/stream-twice.yaml", "t9"),
    ("misspelt key", "stream run {F}/stream-typo.yaml", "stpes"),
    ("negative steps in a stream", "stream run {F}/stream-steps.yaml", "steps"),
    ("steps as a word", "stream run {F}/stream-steps-word.yaml", "steps"),
    ("unknown baseline", "stream run {F}/stream-baseline.yaml", "magic-ft"),
    ("baseline twice", "stream run {F}/stream-baseline-twice.yaml", "baseline"),
    ("arrival file missing", "stream run {F}/stream-missing-file.yaml", "nope.jsonl"),
    ("arrival name with ../", "stream run {F}/stream-traversal.yaml", "../t9"),
    ("arrival data malformed", "stream run {F}/stream-bad-data.yaml", "row 2"),
    ("arrival case twin", "stream run {F}/stream-case.yaml", "T1"),
    ("stream reordered after a run", "stream run {F}/stream-reorder.yaml", "t1"),
    ("module option out of range", "stream run {F}/stream-module.yaml", "rank"),
    ("stream prefix past the context", "stream run {F}/stream-late-prefix.yaml", "100000"),
    ("stream LoRA target missing", "stream run {F}/stream-late-lora.yaml", "nowhere"),
    ("stream search past the context", "stream run {F}/stream-late-tune.yaml", "lengths"),
    ("stream backbone missing", "stream run {F}/stream-no-model.yaml", "no-model"),
    ("stream file binary", "stream run {F}/stream-binary.yaml", "stream-binary.yaml"),
    ("stream file empty", "stream run {F}/stream-empty.yaml", "stream-empty.yaml"),
    ("negative order", "stream run {F}/stream-reorder.yaml --order -1", "order"),
]


def run_cli(argv: list[str]) -> tuple[int, list[str], str]:
    """(exit code, stderr's non-empty lines, a crash's description or '')."""
    from pipelines.cli import main

    out, err = io.StringIO(), io.StringIO()
    crash = ""
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse's refusals
            rc = e.code if isinstance(e.code, int) else 1
        except Exception as e:  # noqa: BLE001  (a crash is what this drill looks for)
            rc, crash = 1, f"crash: {type(e).__name__}: {str(e)[:300]}"
    return rc, [x for x in err.getvalue().splitlines() if x.strip()], crash


def judge(rc: int, lines: list[str], crash: str, word: str, written: list[str]) -> tuple[bool, str]:
    """Whether one case was refused as the drill asks, and what was seen."""
    errors = [x for x in lines if "error:" in x]
    seen = errors[0] if len(errors) == 1 else " | ".join(lines[-3:])
    problems = []
    if crash:
        problems.append(crash)
    if rc == 0:
        problems.append("exit 0")
    if any("Traceback" in x for x in lines):
        problems.append("traceback")
    if len(errors) != 1:
        problems.append(f"{len(errors)} error lines")
    elif len(errors[0]) > MAX_LINE:
        problems.append(f"error line of {len(errors[0])} characters")
    elif word not in errors[0]:
        problems.append(f"does not name {word!r}")
    if written:
        problems.append("wrote " + ", ".join(written[:4]))
    return not problems, "; ".join(problems + [seen]) if problems else seen


def test_bad_input_is_refused_in_one_line_and_writes_nothing(
    drill: Callable, base_home: Path, tmp_path: Path, tiny_encoder_dir: Path, tiny_decoder_dir: Path
) -> None:
    d = drill(
        "bad input (CLI, stream files)",
        "one error line naming the input, exit ≠ 0, no traceback, every file and row unchanged",
    )
    files = tmp_path / "files"
    write_files(files)
    _patch_streams(files, tiny_encoder_dir)
    assert len(CASES) >= 60
    for case_id, argv, word in CASES:
        home = tmp_path / "home"
        shutil.rmtree(home, ignore_errors=True)
        shutil.copytree(base_home, home)
        ctx = Ctx(home, files, tiny_encoder_dir, tiny_decoder_dir)
        args = [ctx.fmt(a) for a in shlex.split(argv)]
        args += ["--home", str(home), "--tracking-uri", "none", "--quiet"]
        before = workspace_state(home)
        rc, lines, crash = run_cli(args)
        written = changes(before, workspace_state(home))
        ok, seen = judge(rc, lines, crash, ctx.fmt(word), written)
        d.case(case_id, ok, seen, argv=argv, rc=rc)
        print(f"{'ok  ' if ok else 'FAIL'} {case_id}: {seen}", flush=True)
    print(f"\n{len(d.cases)} bad inputs, {len(d.failures)} failed")
    d.assert_clean()
