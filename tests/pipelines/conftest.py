"""Fixtures shared by the pipeline tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def serial(tmp_path_factory, tiny_encoder_dir, sentiment) -> dict:
    """The workers' queue (two streams, six arrivals) run by one worker, uninterrupted (SQLite):
    what the multi-worker and Ray runs must equal. Session-scoped, so the module that runs them
    with workers and the one that runs them on Ray share one serial run (it was made once per
    module, about 50 s each)."""
    from tests.pipelines.test_workers import cli, matrices, queue_all, write_data

    root = tmp_path_factory.mktemp("serial")
    write_data(root / "data", sentiment)
    queue_all(root / "home", None, root / "data", tiny_encoder_dir)
    cli(root / "home", None, "worker", "--until-empty")
    return matrices(root / "home", None)
