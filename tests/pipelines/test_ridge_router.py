"""The closed-form ridge router (from `ROUTE_RIDGE_FROM` tasks on): its statistics are sums
over tasks, kept between fits, so a new task reads only its own keys; what it routes equals a
router built from nothing; prefixes are loaded only when an input is routed to them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from continual.routing import RIDGE, RidgeStats, Router, route_method
from pipelines import router_cache, serve
from pipelines.serve import AutoPredictor
from registry import NullTracker, Registry
from tests.pipelines.test_router_cache import BACKBONE, DIM, _testkit, add_task


def clusters(n_tasks: int, per: int, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Keys of `n_tasks` tasks around their own centres, and the centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_tasks, DIM)) * 3
    keys = {
        f"t{i:02d}": (c + rng.normal(size=(per, DIM))).astype(np.float32)
        for i, c in enumerate(centres)
    }
    return keys, centres


def stats_of(keys: dict[str, np.ndarray]) -> RidgeStats:
    stats = RidgeStats(DIM)
    for k, t in enumerate(sorted(keys)):
        stats.add(t, keys[t], f"{k}@")
    return stats


def test_the_ridge_router_routes_held_out_inputs_of_separated_tasks() -> None:
    keys, centres = clusters(8, 40, seed=0)
    router = Router.ridge(stats_of(keys))
    rng = np.random.default_rng(1)
    x = np.concatenate([c + rng.normal(size=(25, DIM)) for c in centres]).astype(np.float32)
    routed = router.route(x)
    assert router.kind == RIDGE and router.tasks == sorted(keys)
    assert np.mean(routed.task == np.repeat(np.arange(8), 25)) >= 0.95
    assert routed.confidence.min() >= 0 and routed.confidence.max() <= 1
    with pytest.raises(Exception, match="another backbone"):
        router.route(np.zeros((1, DIM + 1), np.float32))


def test_statistics_updated_in_place_equal_statistics_built_from_nothing() -> None:
    keys, centres = clusters(5, 30, seed=2)
    changed = (keys["t01"] + 0.5).astype(np.float32)
    grown = stats_of({t: keys[t] for t in ("t00", "t01", "t02")})
    grown.add("t03", keys["t03"], "3@")
    grown.remove("t01", keys["t01"])
    grown.add("t01", changed, "9@")
    grown.add("t04", keys["t04"], "4@")
    fresh = stats_of({**keys, "t01": changed})
    assert grown.sums.keys() == fresh.sums.keys()
    assert np.allclose(grown.gram, fresh.gram, rtol=0, atol=1e-9)
    assert grown.ids["t01"] == "9@"
    x = np.random.default_rng(3).normal(size=(200, DIM)).astype(np.float32) * 3
    a, b = Router.ridge(grown).route(x), Router.ridge(fresh).route(x)
    assert np.array_equal(a.task, b.task)
    assert np.allclose(a.confidence, b.confidence, atol=1e-6)
    back = RidgeStats.restore(grown.state())
    assert np.array_equal(back.gram, grown.gram) and back.ids == grown.ids


def test_a_ridge_router_restored_from_its_state_routes_bit_for_bit() -> None:
    keys, _ = clusters(4, 20, seed=4)
    router = Router.ridge(stats_of(keys))
    back = Router.restore(router.state())
    x = np.random.default_rng(5).normal(size=(30, DIM)).astype(np.float32) * 3
    a, b = router.route(x), back.route(x)
    assert back.kind == RIDGE and back.tasks == router.tasks
    assert np.array_equal(a.task, b.task) and np.array_equal(a.confidence, b.confidence)
    single = Router.restore(Router.ridge(stats_of({"only": keys["t00"]})).state())
    assert single.kind == RIDGE and single.model is None


@pytest.fixture
def ridge_from_3(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """The ridge router from 3 tasks on; records the key row ids each read asks for."""
    monkeypatch.setattr(serve, "ROUTE_RIDGE_FROM", 3)
    asked: list[list[int]] = []
    real = Registry.embeddings_by_id

    def counting(self, ids):
        asked.append(sorted(ids))
        return real(self, ids)

    monkeypatch.setattr(Registry, "embeddings_by_id", counting)
    router_cache.forget_memory()
    yield asked
    router_cache.forget_memory()


def from_nothing(reg: Registry) -> Router:
    """The router a new process with no cache files builds."""
    router_cache.forget_memory()
    for f in (reg.workspace / "cache").glob("*.npz"):
        f.unlink()
    return AutoPredictor(reg, BACKBONE).router  # type: ignore[arg-type]


def test_an_arrival_reads_only_the_new_keys_and_routes_as_a_router_built_from_nothing(
    tmp_path: Path, ridge_from_3: list[list[int]]
) -> None:
    with Registry.open(tmp_path / "ws", tracker=NullTracker()) as reg:
        for i, name in enumerate(("alpha", "beta", "gamma")):
            add_task(reg, name, seed=i)
        first = AutoPredictor(reg, BACKBONE)  # type: ignore[arg-type]
        assert first.router.kind == RIDGE and first.loaded == []  # no prefix loaded yet
        assert len([i for ids in ridge_from_3 for i in ids]) == 3
        assert len(list((reg.workspace / "cache").glob("ridge-*.npz"))) == 1

        add_task(reg, "delta", seed=3)
        ridge_from_3.clear()
        grown = AutoPredictor(reg, BACKBONE)  # type: ignore[arg-type]
        delta_id = reg.embedding_ids(route_method(BACKBONE))["delta"][0]  # type: ignore[arg-type]
        assert ridge_from_3 == [[delta_id]]  # the new task's keys only
        x = np.random.default_rng(7).normal(size=(80, DIM)).astype(np.float32) * 3
        rebuilt = from_nothing(reg)
        a, b = grown.router.route(x), rebuilt.route(x)
        assert grown.router.tasks == rebuilt.tasks == ["alpha", "beta", "delta", "gamma"]
        assert np.array_equal(a.task, b.task)
        assert np.allclose(a.confidence, b.confidence, atol=1e-6)

        # a new version of beta with new keys: its old keys are taken out, the new put in
        rng = np.random.default_rng(11)
        keys = (rng.normal(size=DIM) * 3 + rng.normal(size=(40, DIM))).astype(np.float32)
        _testkit().register(
            reg,
            "beta",
            seed=11,
            new_version=True,
            embeddings={route_method(BACKBONE): keys},  # type: ignore[arg-type]
        )
        ridge_from_3.clear()
        again = AutoPredictor(reg, BACKBONE)  # type: ignore[arg-type]
        assert len(ridge_from_3) == 2  # beta's old keys (to take out), then its new ones
        c, d = again.router.route(x), from_nothing(reg).route(x)
        assert np.array_equal(c.task, d.task)
        assert np.allclose(c.confidence, d.confidence, atol=1e-6)


def test_prefixes_load_when_an_input_is_routed_to_them(
    tmp_path: Path, ridge_from_3: list[list[int]]
) -> None:
    with Registry.open(tmp_path / "ws", tracker=NullTracker()) as reg:
        for i, name in enumerate(("alpha", "beta", "gamma", "delta")):
            add_task(reg, name, seed=i)
        predictor = AutoPredictor(reg, BACKBONE)  # type: ignore[arg-type]
        assert predictor.loaded == []
        got = predictor.prefix(predictor.router.tasks.index("gamma"))
        assert got.spec.name == "gamma" and [t.spec.name for t in predictor.loaded] == ["gamma"]


def test_statistics_of_another_registry_with_the_same_row_ids_are_not_used(
    tmp_path: Path, ridge_from_3: list[list[int]]
) -> None:
    """A registry made again from nothing numbers its rows from 1 again: the kept statistics
    (same task names, same ids) must be told apart by the rows' stamps and rebuilt."""
    import shutil

    with Registry.open(tmp_path / "old", tracker=NullTracker()) as reg:
        for i, name in enumerate(("alpha", "beta", "gamma")):
            add_task(reg, name, seed=i)
        AutoPredictor(reg, BACKBONE)  # type: ignore[arg-type]
        ids_before = reg.embedding_ids(route_method(BACKBONE))  # type: ignore[arg-type]
    with Registry.open(tmp_path / "new", tracker=NullTracker()) as reg:
        for i, name in enumerate(("alpha", "beta", "gamma")):
            add_task(reg, name, seed=10 + i)  # other keys under the same names and row ids
        ids_now = reg.embedding_ids(route_method(BACKBONE))  # type: ignore[arg-type]
        assert {t: i for t, (i, _) in ids_now.items()} == {t: i for t, (i, _) in ids_before.items()}
        shutil.copytree(tmp_path / "old" / "cache", reg.workspace / "cache")
        router_cache.forget_memory()
        got = AutoPredictor(reg, BACKBONE).router  # type: ignore[arg-type]
        x = np.random.default_rng(9).normal(size=(60, DIM)).astype(np.float32) * 3
        want = from_nothing(reg)
        a, b = got.route(x), want.route(x)
        assert np.array_equal(a.task, b.task) and np.allclose(a.confidence, b.confidence)
