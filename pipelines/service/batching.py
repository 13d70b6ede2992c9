"""Micro-batching: predict requests that arrive together are answered in one backbone pass.

The first request of a batch waits up to `window_s` for others (until `max_batch` inputs are
gathered); then the whole group runs as one call of `answer` on the batcher's single thread.
While it runs, new requests queue up and form the next batch, so under load batches fill
without waiting. Modes (settings.batching): `mixed` (one pass over every gathered request,
tasks mixed), `task` (one pass per task among them), `off` (one pass per request).
Answers do not depend on the batch: each row carries its own task's prefix, and padding is
masked, so a request's answers equal its answers alone (tests/service pins it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

Item = tuple[str | None, str]


@dataclass
class _Request:
    items: list[Item]
    future: asyncio.Future[list[Any]]
    queued: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    def __init__(
        self,
        answer: Callable[[Sequence[Item]], list[Any]],
        *,
        mode: str = "mixed",
        window_s: float = 0.005,
        max_batch: int = 64,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> None:
        self.answer, self.mode, self.window_s, self.max_batch = answer, mode, window_s, max_batch
        self.on_batch = on_batch  # hears (requests, inputs) of every pass
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="predict")
        self._queue: asyncio.Queue[_Request] | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def depth(self) -> int:
        return 0 if self._queue is None else self._queue.qsize()

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - stopping anyway
                pass
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def run(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the batcher's thread (anything else that uses the backbone)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn)

    async def submit(self, items: list[Item]) -> list[Any]:
        assert self._queue is not None, "the batcher is not started"
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Request(items, future))
        return await future

    async def _loop(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            group = [await self._queue.get()]
            if self.mode != "off":
                n = len(group[0].items)
                deadline = loop.time() + self.window_s
                while n < self.max_batch:
                    try:
                        nxt = self._queue.get_nowait()
                    except asyncio.QueueEmpty:
                        left = deadline - loop.time()
                        if left <= 0:
                            break
                        try:
                            nxt = await asyncio.wait_for(self._queue.get(), left)
                        except TimeoutError:
                            break
                    group.append(nxt)
                    n += len(nxt.items)
            for part in self._passes(group):
                await self._pass(part)

    def _passes(self, group: list[_Request]) -> list[list[_Request]]:
        if self.mode != "task":
            return [group]
        by_task: dict[str | None, list[_Request]] = {}
        for r in group:  # a request's items share one task (or are all routed)
            by_task.setdefault(r.items[0][0] if r.items else None, []).append(r)
        return list(by_task.values())

    async def _pass(self, part: list[_Request]) -> None:
        live = [r for r in part if not r.future.done()]  # a client that left is skipped
        if not live:
            return
        items = [i for r in live for i in r.items]
        if self.on_batch is not None:
            self.on_batch(len(live), len(items))
        try:
            out = await asyncio.get_running_loop().run_in_executor(
                self.executor, self.answer, items
            )
        except Exception as e:  # noqa: BLE001 - every request of the pass hears it
            for r in live:
                if not r.future.done():
                    r.future.set_exception(e)
            return
        start = 0
        for r in live:
            if not r.future.done():
                r.future.set_result(out[start : start + len(r.items)])
            start += len(r.items)
