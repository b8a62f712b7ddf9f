"""Micro-batching: questions that arrive together are embedded together.

A worker takes every question queued while its last batch ran and, when
questions are arriving together, waits at most ``window`` seconds (or until
``max_items`` have gathered) for more; one model call then embeds the whole
batch, off the event loop, and each request gets its own result. A lone
question at an idle worker is run at once, so light load pays no wait and
heavy load forms large batches by itself. With ``max_items=1`` every
request is run on its own (micro-batching off).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Sequence


class QueueFull(Exception):
    """More items are waiting than the batcher takes."""

    def __init__(self, limit: int):
        super().__init__(f"{limit} items are already waiting")
        self.limit = limit


@dataclass
class Pending:
    item: Any
    future: asyncio.Future


class MicroBatcher:
    """Gathers items from concurrent requests and runs them in batches on worker threads.

    ``runners`` are callables ``items -> results`` (one per worker thread; each owns what it uses,
    e.g. its own database connection). When a runner raises for a batch, each of its items is run
    again alone, so only the item that breaks the runner fails. At most ``max_queue`` items wait;
    ``submit`` past that raises ``QueueFull`` (the service answers 503 with ``Retry-After``).
    """

    def __init__(self, runners: Sequence[Callable[[list[Any]], list[Any]]], window: float = 0.01,
                 max_items: int = 32, max_queue: int = 1024):
        if window < 0 or max_items < 1 or max_queue < 1:
            raise ValueError("window must be >= 0, max_items and max_queue >= 1")
        self.max_queue = max_queue
        self.runners = list(runners)
        self.window = window
        self.max_items = max_items
        self.queue: asyncio.Queue[Pending] | None = None
        self.tasks: list[asyncio.Task] = []
        self.executors = [ThreadPoolExecutor(1, thread_name_prefix=f"semsearch-worker-{i}")
                          for i in range(len(self.runners))]
        self.batches = 0
        self.items = 0
        self.last_size = 0  # of the last batch: a sign of whether questions arrive together

    def start(self) -> None:
        self.queue = asyncio.Queue()
        self.tasks = [asyncio.create_task(self._work(runner, executor))
                      for runner, executor in zip(self.runners, self.executors)]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for executor in self.executors:
            executor.shutdown(wait=False, cancel_futures=True)

    def room(self) -> int:
        """How many more items may be queued now."""
        return self.max_queue - (self.queue.qsize() if self.queue is not None else 0)

    async def submit(self, item: Any) -> Any:
        """Queue ``item`` and wait for its result (``QueueFull`` when ``max_queue`` items wait).
        Cancelling the waiting task (a client that went away) drops the item before it runs."""
        if self.queue is None:
            raise RuntimeError("the batcher is not started")
        if self.room() < 1:
            raise QueueFull(self.max_queue)
        future = asyncio.get_running_loop().create_future()
        self.queue.put_nowait(Pending(item, future))
        return await future

    async def _gather(self) -> list[Pending]:
        """The next batch: the first waiting item, everything queued behind it (what arrived while
        the last batch ran), and, when questions are arriving together, whatever else comes within
        the window. A lone question at an idle worker does not wait at all."""
        batch = [await self.queue.get()]
        while len(batch) < self.max_items and not self.queue.empty():
            batch.append(self.queue.get_nowait())
        if len(batch) == 1 and self.last_size <= 1:
            return batch
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.window
        while len(batch) < self.max_items:
            if not self.queue.empty():
                batch.append(self.queue.get_nowait())
                continue
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), left))
            except asyncio.TimeoutError:
                break
        return batch

    async def _work(self, runner: Callable[[list[Any]], list[Any]], executor: ThreadPoolExecutor) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [p for p in await self._gather() if not p.future.done()]  # a client that left: skip it
            if not batch:
                continue
            self.batches += 1
            self.items += len(batch)
            self.last_size = len(batch)
            try:
                results = await loop.run_in_executor(executor, runner, [p.item for p in batch])
            except Exception:
                results = None
            if results is None:  # one item broke the runner: each alone, so it fails by itself
                for p in batch:
                    if p.future.done():
                        continue
                    try:
                        result = (await loop.run_in_executor(executor, runner, [p.item]))[0]
                    except Exception as exc:
                        if not p.future.done():
                            p.future.set_exception(exc)
                        continue
                    if not p.future.done():
                        p.future.set_result(result)
                continue
            for p, result in zip(batch, results):
                if not p.future.done():
                    p.future.set_result(result)
