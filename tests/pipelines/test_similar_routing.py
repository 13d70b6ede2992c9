"""Similar tasks and routing through the CLI on the tiny encoder: embeddings stored with the
prefix, the auto init's lineage, `registry similar`, and `predict --auto` answering a mixed
batch exactly as per-task runs do."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from continual.routing import route_method
from continual.similarity import embedding_method
from registry import Registry
from tasks.spec import TaskSpec
from tests.pipelines.test_stream_run import run

WORDS = {
    "animals": ("cat", "dog", "bird", "mat", "sat"),
    "weather": ("sky", "sea", "sun", "blue", "green"),
    "films": ("movie", "film", "plot", "story", "acting"),
}
LABELS = {"animals": ("yes", "no"), "weather": ("red", "blue"), "films": ("good", "bad")}
FAST = ["--steps", "12", "--lr", "1e-2", "--prefix-length", "4", "--batch-size", "8"]


def rows(task: str, n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    words, labels = WORDS[task], LABELS[task]
    out = []
    for i in range(n):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(3, 6)))
        out.append({"text": f"{text} {'one' if i % 2 else 'two'}", "label": labels[i % 2]})
    return out


def write(folder: Path, task: str) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for split, n, seed in (("train", 40, 1), ("eval", 16, 2)):
        path = folder / f"{task}-{split}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows(task, n, seed)))
        paths.append(path)
    return paths[0], paths[1]


@pytest.fixture(scope="module")
def home(tmp_path_factory, tiny_encoder_dir) -> Path:
    root = tmp_path_factory.mktemp("similar")
    home = root / "home"
    for task in WORDS:
        train, evl = write(root / "data", task)
        code, _, err = run(
            "train", "--backbone", tiny_encoder_dir, "--train", train, "--eval", evl,
            "--name", task, "--home", home, *FAST,
        )  # fmt: skip
        assert code == 0, err
    return home


def test_embedding_and_routing_keys_are_stored_with_each_prefix(home, tiny_encoder) -> None:
    with Registry.open(home, tracking_uri="none") as reg:
        emb = {e.task: e for e in reg.embeddings(embedding_method(tiny_encoder))}
        keys = {e.task: e for e in reg.embeddings(route_method(tiny_encoder))}
    assert sorted(emb) == sorted(keys) == sorted(WORDS)
    h = tiny_encoder.geometry.hidden_size
    width = 2 * h  # the tiny encoder's two layers, concatenated
    assert all(e.dim == width and len(e.vector) == width for e in emb.values())
    assert all(k.dim == width and len(k.vector) % width == 0 for k in keys.values())
    assert all(len(k.vector) // width == 40 for k in keys.values())  # every row (< 256)


def test_auto_init_is_recorded_with_its_sources(home) -> None:
    with Registry.open(home, tracking_uri="none") as reg:
        first = reg.run(reg.show("animals").current.run_id).config["init"]
        assert first == {"strategy": "random", "sources": []}  # nothing earlier to start from
        for task in ("weather", "films"):
            init = reg.run(reg.show(task).current.run_id).config["init"]
            lineage = [e for e in reg.lineage(task) if e.depth == 1]  # direct sources
            assert init["strategy"] in ("random", "weighted")
            if init["strategy"] == "weighted":
                assert lineage and sum(e.weight for e in lineage) == pytest.approx(1.0)
                assert {e.method for e in lineage} == {"init:weighted"}
            else:
                assert lineage == []


def test_registry_similar_for_a_task_and_for_files(home, tmp_path) -> None:
    code, out, err = run("registry", "similar", "films", "--home", home)
    assert code == 0, err
    scores = [s["score"] for s in out["similar"]]
    assert {s["task"] for s in out["similar"]} == {"animals", "weather"}
    assert scores == sorted(scores, reverse=True) and out["method"] == "embedding"
    code, out, err = run("registry", "similar", "films", "--method", "prefix", "--home", home)
    assert code == 0, err
    assert {s["method"] for s in out["similar"]} == {"prefix"}
    train, _ = write(tmp_path / "new", "weather")
    code, out, err = run("registry", "similar", "--train", train, "--top", "1", "--home", home)
    assert code == 0, err
    assert out["query"] == "weather-train" and len(out["similar"]) == 1
    assert out["similar"][0]["task"] == "weather"  # the same data is nearest to itself


@pytest.mark.parametrize(
    "argv, message",
    [
        (["registry", "similar"], "give either TASK"),
        (["registry", "similar", "nope"], "nope"),
        (["registry", "similar", "films", "--top", "0"], "--top"),
        (["predict", "--auto", "--task", "films", "a"], "drop --prefix and --task"),
        (["predict", "--auto"], "at least one TEXT"),
    ],
)
def test_bad_requests_are_one_line(home, argv, message) -> None:
    code, _, err = run(*argv, "--home", home)
    assert code != 0 and len(err) == 1 and message in err[0], err


def test_predict_auto_routes_and_answers_like_per_task_runs(home) -> None:
    texts = []
    for task in WORDS:
        texts += [r["text"] for r in rows(task, 6, seed=7)]
    random.Random(0).shuffle(texts)
    code, out, err = run("predict", "--auto", *texts, "--home", home)
    assert code == 0, err
    answers = out["predictions"]
    assert [a["text"] for a in answers] == texts
    want = {t: task for task in WORDS for t in (r["text"] for r in rows(task, 6, seed=7))}
    right = sum(a["task"] == want[a["text"]] for a in answers)
    assert right / len(answers) >= 0.9, answers
    for task in WORDS:  # one mixed pass equals each task's own run
        mine = [a for a in answers if a["task"] == task]
        if not mine:
            continue
        code, alone, err = run(
            "predict", "--task", task, *[a["text"] for a in mine], "--home", home
        )
        assert code == 0, err
        assert [p["prediction"] for p in alone["predictions"]] == [a["prediction"] for a in mine]


def test_a_refused_registration_stores_no_embedding(home, tiny_encoder) -> None:
    from tasks.errors import ConfigError

    with Registry.open(home, tracking_uri="none") as reg:
        before = len(reg.embeddings("mean-pool:test"))
        view = reg.show("films")
        tensors, _ = reg.load_prefix("films", tiny_encoder.fingerprint)
        run_cfg = reg.run(view.current.run_id)
        spec = TaskSpec.from_dict(view.task.spec)

        def register(task: TaskSpec, vector: torch.Tensor) -> None:
            reg.register_prefix(
                task=task,
                data_fingerprint="x",
                backbone=tiny_encoder.info(),
                tensors=tensors,
                prefix_config=view.current.config,
                train_summary={"steps": 1, "seconds": 0.1, "final_loss": 0.1, "losses": [0.1]},
                run={
                    "seed": 0,
                    "config": run_cfg.config,
                    "packages": {},
                    "backbone_fingerprint": tiny_encoder.fingerprint,
                },
                embeddings={"mean-pool:test": vector},
            )

        with pytest.raises(ConfigError, match="already exists"):
            register(spec, torch.ones(4))
        with pytest.raises(ConfigError, match="non-finite"):
            register(spec.with_(name="films2"), torch.tensor([1.0, float("nan")]))
        assert len(reg.embeddings("mean-pool:test")) == before == 0
        assert [t.name for t in reg.tasks()] == list(WORDS)


def test_human_output_is_a_table(home, capsys) -> None:
    from pipelines.cli import main

    assert main(["registry", "similar", "films", "--home", str(home), "--quiet"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("tasks nearest to films") and len(lines) == 3
    text = rows("films", 1, seed=3)[0]["text"]
    assert main(["predict", "--auto", text, "--home", str(home), "--quiet"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:3] == ["task", "routed", "answer"] and len(lines) == 2
    assert lines[1].startswith("films") and text[:20] in lines[1]
