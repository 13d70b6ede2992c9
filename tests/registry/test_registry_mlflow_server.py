"""MLflow as a tracking server shared by several workers: a real `mlflow server` on 127.0.0.1
with a PostgreSQL backend store (its own database) and a local artifact root, the registry on
PostgreSQL. Two processes register versions of one task at the same moment: every prefix has its
run, the registered model has one version per prefix, and the `current` alias names the version
of the prefix the registry calls current (whatever order the mirrors finished in)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from registry_testkit import PER_WORKER, race, register

from registry import Registry
from registry.tracking import CURRENT_ALIAS
from tests.conftest import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def mlflow_server(mlflow_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow server` as a team would start it; its URL. Skipped, saying why, only if it
    cannot start here."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = (root / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", mlflow_db]
        + ["--artifacts-destination", (root / "artifacts").as_uri()]
        + ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (root / "server.log").read_text()[-800:]
                pytest.skip(f"mlflow server did not start ({proc.poll()=}): {tail}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _client(url: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=url, registry_uri=url)


def test_concurrent_registrations_keep_versions_and_the_current_alias_right(
    mlflow_server: str, pg_url: str, tmp_path: Path
) -> None:
    workspace = tmp_path / "ws"
    with Registry.open(workspace, url=pg_url, tracking_uri=mlflow_server) as reg:
        first = register(reg, "shared")
        assert first.mlflow_run_id  # mirrored to the server
        ids = race(workspace, pg_url, tracking_uri=mlflow_server)
        assert [len(i) for i in ids] == [2 * PER_WORKER] * 2
        shared = reg.prefixes(task="shared")
        current = next(p for p in shared if p.is_current)
        assert current.version == 2 * PER_WORKER + 1
        assert all(p.mlflow_run_id for p in shared), "every version mirrored"
    client = _client(mlflow_server)
    versions = client.search_model_versions("name='shared'")
    tagged = sorted(int(v.tags["prefix_id"]) for v in versions)
    assert tagged == sorted(p.id for p in shared)  # one model version per prefix, none twice
    alias = client.get_model_version_by_alias("shared", CURRENT_ALIAS)
    assert int(alias.tags["prefix_id"]) == current.id
    for p in shared:  # each run is the prefix's own
        run = client.get_run(p.mlflow_run_id)
        assert run.data.params["version"] == str(p.version)
    for name in (f"{w}-{i}" for w in ("alpha", "beta") for i in range(PER_WORKER)):
        v = client.get_model_version_by_alias(name, CURRENT_ALIAS)
        assert v.version == "1"
