"""Micro-batching: requests answered together get the answers they get alone, in every mode."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pipelines.service.answers import Answerer
from pipelines.service.batching import MicroBatcher
from registry import Registry

REQUESTS = [
    ("t1", ["good movie", "bad"]),
    ("t2", ["really good film"]),
    (None, ["so bad", "good good", "the plot was bad"]),
    ("t1", ["awful", "fine acting", "great"]),
    ("t2", ["bad", "good", "movie", "film"]),
    (None, ["good"]),
] * 3


@pytest.mark.parametrize("mode", ["mixed", "task", "off"])
def test_batched_answers_equal_answers_alone(
    base_home: Path, tiny_encoder_dir: Path, mode: str
) -> None:
    with Registry.open(base_home, tracking_uri="none") as reg:
        answerer = Answerer(reg, str(tiny_encoder_dir))
        alone = [answerer.answer([(task, t) for t in texts]) for task, texts in REQUESTS]
        passes: list[tuple[int, int]] = []

        async def main() -> list[list]:
            batcher = MicroBatcher(
                answerer.answer,
                mode=mode,
                window_s=0.05,
                max_batch=64,
                on_batch=lambda r, n: passes.append((r, n)),
            )
            batcher.start()
            try:
                return await asyncio.gather(
                    *(batcher.submit([(task, t) for t in texts]) for task, texts in REQUESTS)
                )
            finally:
                await batcher.stop()

        together = asyncio.run(main())
    assert together == alone
    assert sum(r for r, _ in passes) == len(REQUESTS)
    if mode == "off":
        assert all(r == 1 for r, _ in passes)
    elif mode == "mixed":
        assert max(r for r, _ in passes) > 1 and len(passes) < len(REQUESTS)
    else:  # one pass per task (routed requests are their own group) among those gathered
        assert len(passes) < len(REQUESTS) and any(r > 1 for r, _ in passes)


def test_a_failing_pass_fails_its_requests_only(base_home: Path, tiny_encoder_dir: Path) -> None:
    calls = []

    def answer(items):
        calls.append(len(items))
        if any(t == "boom" for _, t in items):
            raise ValueError("boom")
        return [t.upper() for _, t in items]

    async def main():
        batcher = MicroBatcher(answer, mode="off")
        batcher.start()
        try:
            bad = asyncio.ensure_future(batcher.submit([("x", "boom")]))
            good = asyncio.ensure_future(batcher.submit([("x", "fine")]))
            with pytest.raises(ValueError):
                await bad
            assert await good == ["FINE"]
        finally:
            await batcher.stop()

    asyncio.run(main())
    assert calls == [1, 1]
