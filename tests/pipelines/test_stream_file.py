"""Stream files: parsing, defaults and overrides, paths relative to the file, round trips, and
every mistake refused with one line naming the file, the arrival and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.stream import ArrivalPlan, BaselinePlan, StreamSpec, load_stream
from tasks.errors import ConfigError
from tasks.load import DataArgs


def write(folder: Path, text: str) -> Path:
    path = folder / "stream.yaml"
    path.write_text(text, encoding="utf-8")
    return path


GOOD = """
name: demo
backbone: minilm
defaults:
  steps: 150
  lr: 1e-3            # YAML reads this as a string; it still means 0.001
  max-train: 500      # dashes work too
baselines: [sequential-ft, {name: shared-prefix, lr: 2.0e-3}]
arrivals:
  - dataset: sms_spam
  - name: tickets
    train: data/train.jsonl
    eval: data/eval.jsonl
    text_field: body
    label_field: queue
    steps: 300
    max_eval: 100
"""


def test_a_stream_file_with_defaults_and_overrides(tmp_path: Path) -> None:
    spec = load_stream(write(tmp_path, GOOD))
    assert spec.name == "demo" and spec.backbone == "minilm"
    first, second = spec.arrivals
    assert first.name == "sms_spam" and first.data.dataset == "sms_spam"
    assert first.config.steps == 150 and first.config.lr == 0.001
    assert first.data.max_train == 500
    assert second.config.steps == 300 and second.data.max_eval == 100
    assert second.data.text_field == "body" and second.data.target_field == "queue"
    # files are found relative to the stream file, wherever the command runs
    assert second.data.train == str((tmp_path / "data/train.jsonl").resolve())
    assert [b.name for b in spec.baselines] == ["sequential-ft", "shared-prefix"]
    assert dict(spec.baselines[1].options) == {"lr": 0.002}


ROUND_TRIPS = [
    ArrivalPlan(name="a", data=DataArgs(dataset="trec", max_train=10)),
    BaselinePlan(name="sequential-ft", options=(("lr", 5e-5),)),
    StreamSpec(
        backbone="minilm",
        arrivals=(ArrivalPlan(name="t", data=DataArgs(train="/x.jsonl", text_field="body")),),
        baselines=(BaselinePlan(name="shared-prefix"),),
        name="s",
        source="/s.yaml",
    ),
]


@pytest.mark.parametrize("record", ROUND_TRIPS, ids=lambda r: type(r).__name__)
def test_configs_round_trip(record) -> None:
    assert type(record).from_dict(record.to_dict()) == record


BAD = {
    "unknown key": ("arrivals:\n  - dataset: trec\n    stepz: 3\n", "did you mean 'steps'"),
    "no backbone": ("arrivals:\n  - dataset: trec\n", "'backbone' is missing"),
    "no data": ("backbone: minilm\narrivals:\n  - name: x\n", "give the data"),
    "two sources": (
        "backbone: minilm\narrivals:\n  - {dataset: trec, train: a.jsonl}\n",
        "one of them",
    ),
    "duplicate": ("backbone: minilm\narrivals:\n  - dataset: trec\n  - dataset: trec\n", "twice"),
    "bad baseline": (
        "backbone: minilm\nbaselines: [icarl]\narrivals:\n  - dataset: trec\n",
        "unknown baseline 'icarl'",
    ),
    "not a number": ("backbone: minilm\narrivals:\n  - {dataset: trec, steps: many}\n", "steps"),
    "out of range": ("backbone: minilm\narrivals:\n  - {dataset: trec, steps: 0}\n", "steps=0"),
    "bad name": ("backbone: minilm\narrivals:\n  - {name: 'a b', train: x.jsonl}\n", "a b"),
    "empty": ("backbone: minilm\narrivals: []\n", "non-empty"),
    "bad yaml": ("backbone: [minilm\n", "not valid YAML at line"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_mistakes_are_one_line_naming_the_file(case: str, tmp_path: Path) -> None:
    text, expected = BAD[case]
    if "backbone" not in text and case != "no backbone":
        text = "backbone: minilm\n" + text
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_stream(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and expected in message


def test_a_missing_stream_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="stream file not found"):
        load_stream(tmp_path / "nope.yaml")


def test_the_demo_stream_parses() -> None:
    spec = load_stream(Path(__file__).resolve().parents[2] / "streams" / "demo.yaml")
    assert spec.backbone == "minilm"
    assert [a.name for a in spec.arrivals] == [
        "sms_spam",
        "vader_tweets",
        "trec",
        "bbc_news",
        "imdb",
    ]
    assert [b.name for b in spec.baselines] == ["sequential-ft"]
    assert all(a.data.dataset == a.name for a in spec.arrivals)


def test_a_stream_runs_in_seeded_orders(tmp_path: Path) -> None:
    from pipelines.stream import in_order

    names = ["trec", "sms_spam", "imdb", "boolq", "bbc_news", "vader_nyt"]
    arrivals = "".join(f"  - dataset: {n}\n" for n in names)
    spec = load_stream(write(tmp_path, f"backbone: minilm\narrivals:\n{arrivals}"))
    assert in_order(spec, 0) == spec == in_order(spec, None)
    one = [p.name for p in in_order(spec, 1).arrivals]
    assert sorted(one) == sorted(names) and one != names
    assert one == [p.name for p in in_order(spec, 1).arrivals]  # seeded
    assert one != [p.name for p in in_order(spec, 2).arrivals]
    with pytest.raises(ConfigError, match="--order must be"):
        in_order(spec, -1)
