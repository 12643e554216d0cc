"""Run a function over items in threads ahead of a consumer, yielding results in item order.

The converter validates images (full decode) in threads while the main thread is still parsing the
json, and later while it writes rows. Work is handed to the threads in small tasks of consecutive
items, and at most ``max_weight`` (for example bytes of image files) plus one task is in flight
(submitted, not yet consumed), so memory stays bounded however far the threads get ahead. The order
of the results never depends on the number of threads.

``load(item)``, when given, runs in the submitting (consumer) thread and its result is passed to
``work(item, loaded)``. The converter reads the image files there: a file read releases and takes
back the GIL several times, and each time a thread may have to wait for it while the consumer holds
it (MindRecord's writer keeps the GIL for its whole call), so the decode threads should need the GIL
as rarely as possible.

Items can be dropped after the work started (``drop``): a task that has not reached them yet skips
them (the consumer does not see them), so no thread spends time on an item nobody needs.
"""
from __future__ import annotations

import collections
import concurrent.futures
import threading
from typing import Callable, Iterator, Sequence


class OrderedPrefetch:
    """``with OrderedPrefetch(items, work, ...) as prefetch: for item, result in prefetch: ...``

    ``work(item)`` (``work(item, load(item))`` with ``load``) runs in one of ``num_workers`` threads;
    ``weight(item)`` is what an item costs in memory until consumed. Threads start working at
    ``__enter__``; leaving the ``with`` block early (an exception, a --strict stop) stops the threads
    after their current item.
    """

    def __init__(self, items: Sequence, work: Callable, *, num_workers: int, max_weight: float,
                 weight: Callable = lambda item: 1, items_per_task: int = 8, thread_name: str = "prefetch",
                 load: Callable | None = None):
        if num_workers < 1 or items_per_task < 1:
            raise ValueError(f"num_workers and items_per_task must be positive, got {num_workers}, {items_per_task}")
        self._items = list(items)
        self._work = work
        self._load = load
        self._weight = weight
        self._max_weight = max_weight
        self._items_per_task = items_per_task
        self._num_workers = num_workers
        self._thread_name = thread_name
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pending: collections.deque = collections.deque()   # (start, stop, weight, future)
        self._next = 0
        self._in_flight = 0.0
        self._dropped: frozenset = frozenset()
        self._stop = threading.Event()

    def drop(self, keys, key: Callable) -> None:
        """From now on skip the items whose ``key(item)`` is in ``keys`` (not worked on, not yielded)."""
        self._drop_key = key
        self._dropped = frozenset(keys)

    def _is_dropped(self, item) -> bool:
        dropped = self._dropped
        return bool(dropped) and self._drop_key(item) in dropped

    def _run_task(self, start: int, stop: int, loaded: list | None) -> list:
        results = []
        for offset, item in enumerate(self._items[start:stop]):
            if self._stop.is_set():
                break
            if self._is_dropped(item):
                results.append(None)
            else:
                results.append(self._work(item) if loaded is None else self._work(item, loaded[offset]))
        return results

    def _fill(self) -> None:
        """Submit tasks while the in-flight weight allows (always at least one task per thread)."""
        while self._next < len(self._items) and (self._in_flight < self._max_weight
                                                 or len(self._pending) < self._num_workers):
            start = self._next
            stop = min(start + self._items_per_task, len(self._items))
            task = self._items[start:stop]
            weight = sum(self._weight(item) for item in task)
            loaded = None
            if self._load is not None:
                loaded = [None if self._is_dropped(item) else self._load(item) for item in task]
            future = self._pool.submit(self._run_task, start, stop, loaded)
            self._pending.append((start, stop, weight, future))
            self._in_flight += weight
            self._next = stop

    def __enter__(self) -> "OrderedPrefetch":
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=self._num_workers,
                                                           thread_name_prefix=self._thread_name)
        self._fill()
        return self

    def __iter__(self) -> Iterator[tuple]:
        while self._pending:
            start, stop, weight, future = self._pending.popleft()
            results = future.result()
            self._in_flight -= weight
            self._fill()
            for item, result in zip(self._items[start:stop], results):
                if not self._is_dropped(item):
                    yield item, result

    def __exit__(self, exc_type, exc, tb) -> None:
        self._stop.set()
        for _, _, _, future in self._pending:
            future.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=True)
