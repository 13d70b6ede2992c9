"""Every data problem is one DataError line naming the file, the row or field, and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.errors import DataError
from tasks.sources import load_files


def error(**kwargs: object) -> str:
    """The message load_files raises; it must be a single line."""
    with pytest.raises(DataError) as err:
        load_files(name="t", **kwargs)  # type: ignore[arg-type]
    msg = str(err.value)
    assert "\n" not in msg, msg
    return msg


def test_missing_file(data_dir: Path) -> None:
    msg = error(train="data/train.jsonl")
    assert msg.startswith("data/train.jsonl: file not found")


def test_unsupported_extension(data_dir: Path) -> None:
    (data_dir / "train.txt").write_text("good\tpos\n")
    msg = error(train=data_dir / "train.txt")
    assert "train.txt: unsupported file type '.txt'" in msg and ".jsonl" in msg


def test_missing_field_lists_the_fields_present(jsonl, sentiment) -> None:
    rows = [{"review": r["text"], "label": r["label"]} for r in sentiment]
    msg = error(train=jsonl("train.jsonl", rows))
    assert "field 'text' is missing" in msg
    assert "'review', 'label'" in msg and "--text-field" in msg


def test_missing_label_field_names_the_flag(csvfile) -> None:
    msg = error(train=csvfile("train.csv", ["text", "y"], [["a", "1"], ["b", "2"]]))
    assert "field 'label' is missing (fields present: 'text', 'y')" in msg
    assert "--label-field" in msg


def test_empty_split_zero_rows(csvfile, data_dir: Path) -> None:
    msg = error(train=csvfile("train.csv", ["text", "label"], []))
    assert msg.startswith(f"{data_dir / 'train.csv'}: the train split has 0 rows")
    (data_dir / "train.jsonl").write_text("\n\n")
    assert "train.jsonl: the file is empty" in error(train=data_dir / "train.jsonl")


def test_empty_eval_split(jsonl, sentiment) -> None:
    (Path("eval.jsonl")).write_text("")
    msg = error(train=jsonl("train.jsonl", sentiment), eval="eval.jsonl")
    assert msg.startswith("eval.jsonl: the file is empty; the eval split")


def test_blank_text_names_the_row(jsonl, sentiment) -> None:
    rows = sentiment[:4] + [{"text": "   ", "label": "pos"}] + sentiment[4:]
    msg = error(train=jsonl("train.jsonl", rows))
    assert "train.jsonl: row 5: field 'text' is empty or blank" in msg


def test_null_text_names_the_row(jsonl, sentiment) -> None:
    rows = sentiment[:2] + [{"text": None, "label": "pos"}] + sentiment[2:]
    assert "row 3: field 'text' is missing" in error(train=jsonl("train.jsonl", rows))


def test_missing_target_reads_like_the_house_example(jsonl, sentiment) -> None:
    rows = sentiment[:6] + [{"text": "no label here"}] + sentiment[6:]
    msg = error(train=jsonl("train.jsonl", rows).name)
    assert msg.startswith("train.jsonl: row 7: field 'label' is missing")
    assert "every row needs it" in msg and "--label-field" in msg


def test_empty_target_cell_in_csv(csvfile) -> None:
    msg = error(
        train=csvfile("train.csv", ["text", "label"], [["a", "pos"], ["b", ""], ["c", "neg"]])
    )
    assert "train.csv: row 2: field 'label' is missing or empty" in msg


def test_generation_target_uses_its_own_flag(jsonl) -> None:
    rows = [{"text": "doc", "summary": "s"}, {"text": "doc 2", "summary": None}]
    msg = error(train=jsonl("train.jsonl", rows), kind="generation", target_field="summary")
    assert "row 2: field 'summary' is missing" in msg and "--target-field" in msg


def test_undecodable_text_names_line_and_byte(data_dir: Path) -> None:
    body = b"text,label\ngood film,pos\n" + "caf\xe9 film,neg\n".encode("latin-1")
    (data_dir / "train.csv").write_bytes(body)
    msg = error(train="train.csv")
    offset = body.index(b"\xe9")
    assert msg.startswith(
        f"train.csv: line 3 (byte offset {offset}) is not valid UTF-8 (byte 0xe9)"
    )
    assert "re-save the file as UTF-8" in msg


def test_malformed_rows_are_named(data_dir: Path) -> None:
    (data_dir / "train.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": "b",\n')
    assert "train.jsonl: row 2: not valid JSON" in error(train="train.jsonl")
    (data_dir / "train.csv").write_text("text,label\na,x\nb,y,extra\n")
    assert "train.csv: row 2: has 3 fields but the header has 2" in error(train="train.csv")


def test_unseen_label_in_eval(jsonl, sentiment) -> None:
    ev = [{"text": "fine", "label": "pos"}, {"text": "meh", "label": "neutral"}]
    msg = error(train=jsonl("train.jsonl", sentiment).name, eval=jsonl("eval.jsonl", ev).name)
    assert msg.startswith(
        "eval.jsonl: row 2: unseen label 'neutral' never occurs in the train data"
    )


def test_unknown_label_against_given_labels(jsonl, sentiment) -> None:
    msg = error(train=jsonl("train.jsonl", sentiment), labels=["pos", "negative"])
    assert "train.jsonl: row 2: unknown label 'neg'" in msg and "['pos', 'negative']" in msg


def test_classification_needs_two_labels(jsonl, sentiment) -> None:
    rows = [r for r in sentiment if r["label"] == "pos"]
    msg = error(train=jsonl("train.jsonl", rows))
    assert "field 'label' has 1 distinct label(s) (pos)" in msg and "at least 2" in msg


def test_one_row_cannot_be_split(jsonl) -> None:
    msg = error(train=jsonl("train.jsonl", [{"text": "a", "label": "x"}]))
    assert "too few to hold out an eval split" in msg


def test_a_folder_is_not_a_file(data_dir: Path) -> None:
    (data_dir / "dir.jsonl").mkdir()
    assert "is a folder" in error(train="dir.jsonl")
