"""A stream whose prefix files and task data live in an S3-compatible store (moto's server on
127.0.0.1): `stream run --store s3://…`, then `predict` from another workspace folder that shares
the database and the store. Nothing but the database lands in either folder's artifacts."""

from __future__ import annotations

from pathlib import Path

from tests.pipelines.test_stream_run import TASKS, run, stream_file, write_tasks


def test_a_stream_with_its_files_in_s3(
    tmp_path: Path, tiny_encoder_dir: Path, sentiment, s3_bucket: str
) -> None:
    import fsspec

    data = tmp_path / "data"
    write_tasks(data, sentiment, TASKS[:2])
    path = stream_file(data, tiny_encoder_dir, "[]", TASKS[:2])
    store = f"{s3_bucket}/team"
    home = tmp_path / "home"
    code, out, err = run("stream", "run", path, "--home", home, "--store", store)
    assert code == 0, err
    assert not (home / "artifacts").exists()
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    stored = fs.find(f"{store[5:]}/artifacts")
    assert any(p.endswith(".safetensors") for p in stored)
    assert any(p.endswith(".data.jsonl.gz") for p in stored)

    other = tmp_path / "other"
    db = f"sqlite:///{home / 'registry.db'}"
    args = ("--home", other, "--registry-url", db, "--store", store)
    code, out, err = run("predict", "--task", TASKS[0][0], "a wonderful day", *args)
    assert code == 0, err
    assert out["predictions"][0]["prediction"] in TASKS[0][1]
    code, out, err = run("registry", "check", *args)
    assert code == 0 and out["ok"], (out, err)
    assert not (other / "artifacts").exists()
