"""A separate process for test_registry_concurrency: opens the registry, says "ready", waits
for "go" on stdin, then registers its own tasks and new versions of the shared task.

    python registry_worker.py WORKSPACE URL|- NAME COUNT [late]

With "late", it says "ready" before opening the registry, so two workers open (and migrate) an
empty database at the same moment. With $CONTINUAL_TEST_TRACKING_URI set, registrations are
mirrored to that MLflow store (else no tracking).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # the repository root, for `registry` and `tasks`


def main() -> None:
    workspace, url, name, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    late = sys.argv[5:] == ["late"]
    spec = importlib.util.spec_from_file_location("registry_testkit", HERE / "registry_testkit.py")
    assert spec is not None and spec.loader is not None
    kit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kit)
    from registry import NullTracker, Registry

    if late:
        print("ready", flush=True)
        sys.stdin.readline()
    tracking = os.environ.get("CONTINUAL_TEST_TRACKING_URI")
    tracker = None if tracking else NullTracker()
    db = None if url == "-" else url
    with Registry.open(workspace, url=db, tracking_uri=tracking, tracker=tracker) as reg:
        if not late:
            print("ready", flush=True)
            sys.stdin.readline()
        ids = []
        for i in range(count):
            ids.append(kit.register(reg, f"{name}-{i}", seed=i).id)
            if not late:
                ids.append(kit.register(reg, "shared", seed=100 + i, new_version=True).id)
    print(json.dumps(ids), flush=True)


if __name__ == "__main__":
    main()
