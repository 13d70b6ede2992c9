"""load_files: the formats agree, splits are carved and recorded, hub names fail clearly."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tasks import sources
from tasks.errors import ConfigError, DataError
from tasks.sources import load_files


def test_jsonl_csv_tsv_parquet_give_the_same_task(
    jsonl, csvfile, sentiment, data_dir: Path
) -> None:
    import pandas as pd

    rows = sentiment + [{"text": "007", "label": "pos"}, {"text": "NA", "label": "neg"}]
    paths = [
        jsonl("train.jsonl", rows),
        csvfile("train.csv", ["text", "label"], [[r["text"], r["label"]] for r in rows]),
        csvfile("train.tsv", ["label", "text"], [[r["label"], r["text"]] for r in rows]),
    ]
    pd.DataFrame(rows).to_parquet(data_dir / "train.parquet")
    paths.append(data_dir / "train.parquet")
    tasks = [load_files(name="films", train=p, seed=2) for p in paths]
    assert len({t.fingerprint for t in tasks}) == 1
    assert len({(t.train, t.eval) for t in tasks}) == 1
    assert {"007", "NA"} <= {ex.text for ex in tasks[0].train + tasks[0].eval}
    assert tasks[0].spec.source == f"files:{paths[0]}"


def test_numbers_become_the_same_words_from_json_and_csv(jsonl, csvfile) -> None:
    rows = [{"text": f"row {i}", "label": 9 + i % 3} for i in range(12)]
    a = load_files(name="n", train=jsonl("a.jsonl", rows))
    table = [[r["text"], r["label"]] for r in rows]
    b = load_files(name="n", train=csvfile("b.csv", ["text", "label"], table))
    assert a.spec.labels == ("9", "10", "11")  # numeric order, as words
    assert a.fingerprint == b.fingerprint


def test_eval_file_is_used_as_is(jsonl, sentiment) -> None:
    task = load_files(
        name="films",
        train=jsonl("train.jsonl", sentiment),
        eval=jsonl("eval.jsonl", [{"text": " fine film ", "label": "pos"}]),
        labels=["pos", "neg"],
        description="Is the review positive?",
    )
    assert task.spec.labels == ("pos", "neg")
    assert task.eval == (sources.Example("fine film", "pos"),)
    assert len(task.train) == 20
    assert "eval_split" not in dict(task.spec.extra)
    assert task.spec.description == "Is the review positive?"


def test_no_eval_file_carves_a_recorded_stratified_split(jsonl, sentiment) -> None:
    task = load_files(name="films", train=jsonl("train.jsonl", sentiment), seed=4)
    assert Counter(ex.target for ex in task.eval) == {"pos": 2, "neg": 2}
    assert dict(task.spec.extra)["eval_split"] == "seeded stratified 20% of train, seed 4"
    assert task.spec.seed == 4 and task.spec.labels == ("neg", "pos")
    assert task.spec.description == "Classify the text as one of: neg, pos."
    again = load_files(name="films", train=jsonl("train.jsonl", sentiment), seed=4)
    assert again == task


def test_max_train_subsamples_train_only(jsonl, sentiment) -> None:
    task = load_files(name="films", train=jsonl("train.jsonl", sentiment), max_train=6)
    assert len(task.train) == 6 and len(task.eval) == 4
    assert Counter(ex.target for ex in task.train) == {"pos": 3, "neg": 3}
    assert "max_train" in dict(task.spec.extra)


def test_generation_task_has_no_labels(jsonl) -> None:
    rows = [{"doc": f"long article {i}", "title": f"title {i}"} for i in range(10)]
    task = load_files(
        name="titles",
        train=jsonl("docs.jsonl", rows),
        kind="generation",
        text_field="doc",
        target_field="title",
    )
    assert task.spec.labels == () and task.spec.metric == "rouge_l"
    assert (len(task.train), len(task.eval)) == (8, 2)
    assert dict(task.spec.extra)["eval_split"] == "seeded 20% of train, seed 0"
    assert all(ex.target.startswith("title") for ex in task.train)


def test_datasets_cache_stays_in_the_asset_cache(
    jsonl, sentiment, cache: Path, data_dir: Path
) -> None:
    jsonl("train.jsonl", sentiment)
    load_files(name="films", train="train.jsonl")
    assert [p.name for p in data_dir.iterdir()] == ["train.jsonl"]
    assert (cache / "hf-datasets").is_dir()


def test_bad_options_are_config_errors(jsonl, sentiment) -> None:
    path = jsonl("train.jsonl", sentiment)
    with pytest.raises(ConfigError):
        load_files(name="bad name!", train=path)
    with pytest.raises(ConfigError):
        load_files(name="t", train=path, kind="regression")
    with pytest.raises(ConfigError):
        load_files(name="t", train=path, max_train=0)
    with pytest.raises(ConfigError):
        load_files(name="t", train=path, kind="generation", labels=["a"])


def test_unreachable_hub_id_is_one_clear_line(monkeypatch: pytest.MonkeyPatch, data_dir) -> None:
    import datasets

    def offline(name: str, **_: object) -> None:
        raise ConnectionError(f"Couldn't reach '{name}' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError) as err:
        load_files(name="t", train="stanfordnlp/imdb")
    msg = str(err.value)
    assert msg.startswith("stanfordnlp/imdb: not a local file") and "\n" not in msg
    assert "ConnectionError" in msg


def test_hub_dataset_uses_its_splits_and_label_names(
    monkeypatch: pytest.MonkeyPatch, data_dir
) -> None:
    import datasets

    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
    )
    train = datasets.Dataset.from_dict(
        {"text": [f"t{i}" for i in range(6)], "label": [0, 1] * 3}, features=features
    )
    test = datasets.Dataset.from_dict({"text": ["e0", "e1"], "label": [1, 0]}, features=features)
    hub = datasets.DatasetDict({"train": train, "test": test})
    monkeypatch.setattr(datasets, "load_dataset", lambda name, **_: hub)
    task = load_files(name="t", train="someone/films", eval="someone/films")
    assert task.spec.labels == ("neg", "pos")
    assert [ex.target for ex in task.eval] == ["pos", "neg"]
    assert len(task.train) == 6


# --- files from Windows tools: a UTF-8 byte-order mark and CRLF line ends ----------------------

BOM = b"\xef\xbb\xbf"


def _windows_text(rows: list[dict], suffix: str) -> str:
    """What a Windows tool or spreadsheet export writes for `rows` (before the BOM)."""
    if suffix == ".jsonl":
        return "".join(json.dumps(r) + "\r\n" for r in rows)
    if suffix == ".json":
        return "[\r\n" + ",\r\n".join(json.dumps(r) for r in rows) + "\r\n]\r\n"
    sep = "\t" if suffix == ".tsv" else ","
    lines = [sep.join(["text", "label"])] + [sep.join([r["text"], r["label"]]) for r in rows]
    return "\r\n".join(lines) + "\r\n"


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".tsv"])
def test_a_bom_and_crlf_file_reads_as_the_text_it_is(suffix, jsonl, sentiment, data_dir) -> None:
    windows = data_dir / f"windows{suffix}"
    windows.write_bytes(BOM + _windows_text(sentiment, suffix).encode("utf-8"))
    plain = jsonl("plain.jsonl", sentiment)
    got = load_files(name="films", train=windows, eval=windows, seed=2)
    want = load_files(name="films", train=plain, eval=plain, seed=2)
    assert got.train == want.train and got.eval == want.eval
    assert got.fingerprint == want.fingerprint and got.spec.labels == ("neg", "pos")
    cells = [c for ex in got.train for c in (ex.text, ex.target)]
    assert not any("\ufeff" in c or "\r" in c for c in cells)


def test_a_bad_row_in_a_bom_file_is_still_named(data_dir) -> None:
    path = data_dir / "bad.jsonl"
    lines = ['{"text": "a", "label": "x"}', '{"text": "b", "label": "y"}', "{not json"]
    path.write_bytes(BOM + "\r\n".join(lines).encode("utf-8") + b"\r\n")
    with pytest.raises(DataError, match=r"bad.jsonl: row 3: not valid JSON"):
        load_files(name="t", train=path)
