"""Concurrent requests served in one call: dynamic batching, as TensorFlow Serving and Triton do it.

When a clinic's sessions upload at once, each session's thread asks a model to read its images.
Scored one by one, every image pays a whole call's overhead (Keras dispatch, the gate's feature
extractor, small matrix products that leave the cores idle); scored together, they pay it once.

No timer and no worker thread: a caller whose request is waiting runs the next batch itself
when no batch is running, taking every request queued by then (oldest first, at most
`max_batch`), and returns once its own requests are answered. While one batch runs, the requests
that arrive meanwhile queue for the next, so batches grow exactly when the load does and a lone
request runs at once.

`CachedBatchedCalls` adds memory by key (an image's sha256): a caller asks for all its items at
once (`many`), those already answered come back at once, and the rest join one batch together.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Sequence
from typing import Generic, TypeVar

Key = TypeVar("Key", bound=Hashable)
Item = TypeVar("Item")
Result = TypeVar("Result")


class _Request(Generic[Item, Result]):
    def __init__(self, item: Item) -> None:
        self.item = item
        self.done = False
        self.result: Result | None = None
        self.error: BaseException | None = None


class BatchedCalls(Generic[Item, Result]):
    """Call `function(items) -> results` (one result per item, in order) on the requests of
    concurrent callers together; each caller gets its own results, or the batch's exception."""

    def __init__(self, function: Callable[[list[Item]], Sequence[Result]], max_batch: int = 32) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be 1 or more; received {max_batch}")
        self._function = function
        self._max_batch = max_batch
        self._changed = threading.Condition()
        self._queue: list[_Request[Item, Result]] = []
        self._running = False
        self.batch_sizes: deque[int] = deque(maxlen=1024)  # requests per call, latest last (benchmarks, tests)

    def many(self, items: Sequence[Item]) -> list[Result]:
        """Every item's result, in order: the items are queued together, so they are read in one batch
        (with whatever other callers queued by then) unless they exceed `max_batch`."""
        requests: list[_Request[Item, Result]] = [_Request(item) for item in items]

        def answered() -> bool:
            return all(request.done for request in requests)

        with self._changed:
            self._queue.extend(requests)
        while True:
            with self._changed:
                self._changed.wait_for(lambda: answered() or not self._running)
                if answered():
                    break
                self._running = True
                batch = self._queue[: self._max_batch]
                del self._queue[: len(batch)]
            self._run(batch)
        for request in requests:
            if request.error is not None:
                raise request.error
        return [request.result for request in requests]

    def _run(self, batch: list[_Request[Item, Result]]) -> None:
        """Answer every request of the batch, then let the next caller run the next batch."""
        try:
            results = list(self._function([request.item for request in batch]))
            if len(results) != len(batch):
                raise RuntimeError(f"the batched function returned {len(results)} results for {len(batch)} items")
        except BaseException as error:  # every caller of this batch sees why it failed
            results, failure = [None] * len(batch), error
        else:
            failure = None
        with self._changed:
            for request, result in zip(batch, results):
                request.result, request.error, request.done = result, failure, True
            self.batch_sizes.append(len(batch))
            self._running = False
            self._changed.notify_all()


class CachedBatchedCalls(Generic[Key, Item, Result]):
    """`BatchedCalls` that remembers the latest `max_entries` results by key: a key answered before
    is not read again, whoever asks, and the keys not yet answered are read in one batch."""

    def __init__(
        self, function: Callable[[list[Item]], Sequence[Result]], max_entries: int = 1024, max_batch: int = 32
    ) -> None:
        self._calls = BatchedCalls(function, max_batch)
        self._max_entries = max_entries
        self._answers: OrderedDict[Key, Result] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()

    @property
    def batch_sizes(self) -> deque[int]:
        return self._calls.batch_sizes

    def many(self, keyed: Sequence[tuple[Key, Item]]) -> list[Result]:
        """The result for each (key, item), in order; an item is read only when its key has no answer."""
        with self._lock:
            known = {key: self._answers[key] for key, _ in keyed if key in self._answers}
            for key in known:
                self._answers.move_to_end(key)
        missing = {key: item for key, item in keyed if key not in known}  # one read per key
        if missing:
            read = dict(zip(missing, self._calls.many(list(missing.values()))))
            with self._lock:
                for key, result in read.items():
                    self._answers[key] = result
                    self._answers.move_to_end(key)
                while len(self._answers) > self._max_entries:
                    self._answers.popitem(last=False)
            known.update(read)
        return [known[key] for key, _ in keyed]
