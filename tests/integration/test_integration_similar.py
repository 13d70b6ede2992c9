"""`registry similar` on the real minilm and real data given as local files: a new sentiment
task finds the sentiment tasks, a new topic task finds the topic task.

The registry holds five catalog tasks (each trained for one step: only their embeddings, stored
at arrival, matter here). The new tasks are written as JSONL files from catalog data the
registry does not hold (imdb reviews; 20 Newsgroups posts), under names of their own.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.load import DataArgs, load_data

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REGISTERED = {
    "vader_tweets": "sentiment",
    "vader_movies": "sentiment",
    "trec": "question",
    "sms_spam": "spam",
    "bbc_news": "topic",
}


@pytest.fixture(scope="module")
def home(tmp_path_factory, cli) -> Path:
    home = tmp_path_factory.mktemp("similar-minilm") / "home"
    for name in REGISTERED:
        r = cli(
            "train", "--backbone", "minilm", "--dataset", name, "--steps", "1",
            "--batch-size", "4", "--max-train", "256", "--max-eval", "8",
            "--home", home, "--json", "--quiet", "--tracking-uri", "none",
        )  # fmt: skip
        assert r.rc == 0, r.err
    return home


def local_file(folder: Path, dataset: str, name: str) -> Path:
    data = load_data(DataArgs(dataset=dataset, max_train=300), None)
    path = folder / f"{name}.jsonl"
    path.write_text(
        "".join(json.dumps({"post": e.text, "tag": e.target}) + "\n" for e in data.train),
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize(
    "dataset, name, family, top",
    [("imdb", "film_reviews", "sentiment", 2), ("news20", "forum_topics", "topic", 1)],
)
def test_new_task_from_files_finds_its_family(
    home, cli, tmp_path, dataset, name, family, top
) -> None:
    path = local_file(tmp_path, dataset, name)
    r = cli(
        "registry", "similar", "--train", path, "--text-field", "post", "--label-field", "tag",
        "--top", "5", "--home", home, "--json", "--quiet", "--tracking-uri", "none",
    )  # fmt: skip
    assert r.rc == 0, r.err
    ranked = [s["task"] for s in r.out["similar"]]
    assert r.out["query"] == name and sorted(ranked) == sorted(REGISTERED)
    assert {REGISTERED[t] for t in ranked[:top]} == {family}, r.out["similar"]
    assert all(REGISTERED[t] != family for t in ranked[top:])


def test_prefix_similarity_ranks_every_other_task(home, cli) -> None:
    r = cli(
        "registry", "similar", "vader_movies", "--method", "prefix",
        "--home", home, "--json", "--quiet", "--tracking-uri", "none",
    )  # fmt: skip
    assert r.rc == 0, r.err
    assert sorted(s["task"] for s in r.out["similar"]) == sorted(set(REGISTERED) - {"vader_movies"})
    assert all(-1.0 <= s["score"] <= 1.0 for s in r.out["similar"])
