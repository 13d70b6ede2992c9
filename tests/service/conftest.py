"""A registry with two tiny tasks learnt in stream `s` (the tiny random BERT of the top
conftest), and the service's app over a copy of it, driven in-process by Starlette's
TestClient (the real app, lifespan included; the integration test runs a real uvicorn)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

TASKS = {"t1": (("positive", "negative"), 1), "t2": (("yes", "no"), 3)}
TRAIN = {"steps": 24, "lr": 1e-2, "batch_size": 8, "eval_every": 8}


@pytest.fixture(scope="session")
def base_home(
    tmp_path_factory: pytest.TempPathFactory, tiny_encoder_dir: Path, sentiment: Callable
) -> Path:
    """A workspace holding t1 and t2, learnt in stream `s` (built once; tests use copies)."""
    import json

    from continual.train import TrainConfig
    from pipelines.arrival.plan import ArrivalPlan
    from pipelines.arrival.queueing import learn
    from pipelines.settings import RegistryArgs
    from tasks.load import DataArgs

    root = tmp_path_factory.mktemp("served")
    home = root / "home"
    for task, (labels, seed) in TASKS.items():
        files = {}
        for split, n in (("train", 48), ("eval", 24)):
            rows = sentiment(n, seed=seed + (split == "eval") * 100, labels=labels)
            path = root / f"{task}-{split}.jsonl"
            path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
            files[split] = str(path)
        plan = ArrivalPlan(
            name=task,
            data=DataArgs(train=files["train"], eval=files["eval"]),
            config=TrainConfig(**TRAIN),
            prefix_length=4,
            init="random",
        )
        learn(
            RegistryArgs(home=home, tracking_uri="none"),
            plan=plan,
            backbone=str(tiny_encoder_dir),
            stream="s",
            progress=False,
            say=lambda line: None,
        )
    return home


@pytest.fixture
def home(base_home: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "home"
    shutil.copytree(base_home, copy)
    return copy


@pytest.fixture
def client_for(tiny_encoder_dir: Path) -> Iterator[Callable[..., object]]:
    """`client_for(home, **settings)`: a started TestClient over the app on `home`."""
    from fastapi.testclient import TestClient

    from pipelines.service.app import create_app
    from pipelines.service.config import ServeSettings
    from pipelines.service.core import Service
    from pipelines.settings import RegistryArgs

    opened: list[TestClient] = []

    def make(home: Path, **settings: object) -> TestClient:
        args = RegistryArgs(home=home, tracking_uri="none")
        settings.setdefault("backbone", str(tiny_encoder_dir))
        service = Service(args, ServeSettings(workers=0, **settings))
        client = TestClient(create_app(service), raise_server_exceptions=False)
        client.__enter__()
        opened.append(client)
        deadline = time.monotonic() + 60
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, client.get("/readyz").json()
            time.sleep(0.05)
        return client

    yield make
    for c in opened:
        c.__exit__(None, None, None)
        c.app.state.service.close()
