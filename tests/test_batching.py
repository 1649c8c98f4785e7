"""melanoma.batching: callers share a call, each gets its answer, errors reach them all, answers kept by key."""

import threading

import pytest

from melanoma.batching import BatchedCalls, CachedBatchedCalls

WAIT = 10


class Gated:
    """A batched function that records its batches and, while `hold` is clear, blocks inside its
    first call, so that the test can queue requests behind it."""

    def __init__(self, fail_on: object = None) -> None:
        self.batches: list[list] = []
        self.entered, self.hold = threading.Event(), threading.Event()
        self.fail_on = fail_on

    def __call__(self, items: list) -> list:
        self.batches.append(list(items))
        self.entered.set()
        assert self.hold.wait(WAIT)
        if self.fail_on in items:
            raise ValueError(f"cannot score {self.fail_on}")
        return [item * 10 for item in items]


def call_in_threads(calls: BatchedCalls, items: list) -> tuple[dict, list[threading.Thread]]:
    """Each item requested from its own thread; returns (item -> result or exception, threads)."""
    answers: dict = {}

    def ask(item):
        try:
            answers[item] = calls.many([item])[0]
        except Exception as error:  # noqa: BLE001 - the test reads which callers saw it
            answers[item] = error

    threads = [threading.Thread(target=ask, args=(item,)) for item in items]
    for thread in threads:
        thread.start()
    return answers, threads


def wait_until_queued(calls: BatchedCalls, count: int) -> None:
    with calls._changed:
        assert calls._changed.wait_for(lambda: len(calls._queue) == count, WAIT)


def test_a_lone_request_runs_at_once():
    calls = BatchedCalls(lambda items: [item + 1 for item in items])
    assert calls.many([1])[0] == 2 and calls.many([5])[0] == 6
    assert list(calls.batch_sizes) == [1, 1]


def test_requests_that_arrive_during_a_batch_are_served_together_in_the_next():
    function = Gated()
    calls = BatchedCalls(function)
    first, first_threads = call_in_threads(calls, [1])
    assert function.entered.wait(WAIT)
    later, later_threads = call_in_threads(calls, [2, 3, 4, 5])
    wait_until_queued(calls, 4)
    function.hold.set()
    for thread in first_threads + later_threads:
        thread.join(WAIT)
    assert first == {1: 10} and later == {2: 20, 3: 30, 4: 40, 5: 50}
    assert function.batches[0] == [1] and sorted(function.batches[1]) == [2, 3, 4, 5]
    assert list(calls.batch_sizes) == [1, 4]


def test_no_batch_exceeds_the_limit_and_every_request_is_answered():
    function = Gated()
    calls = BatchedCalls(function, max_batch=2)
    _, first_threads = call_in_threads(calls, [0])
    assert function.entered.wait(WAIT)
    later, later_threads = call_in_threads(calls, [1, 2, 3, 4, 5])
    wait_until_queued(calls, 5)
    function.hold.set()
    for thread in first_threads + later_threads:
        thread.join(WAIT)
    assert later == {item: item * 10 for item in (1, 2, 3, 4, 5)}
    assert max(calls.batch_sizes) == 2 and sum(calls.batch_sizes) == 6


def test_an_error_reaches_every_caller_of_its_batch_and_the_next_batch_still_runs():
    function = Gated(fail_on=3)
    calls = BatchedCalls(function)
    _, first_threads = call_in_threads(calls, [1])
    assert function.entered.wait(WAIT)
    later, later_threads = call_in_threads(calls, [2, 3])
    wait_until_queued(calls, 2)
    function.hold.set()
    for thread in first_threads + later_threads:
        thread.join(WAIT)
    assert all(isinstance(later[item], ValueError) and "cannot score 3" in str(later[item]) for item in (2, 3))
    assert calls.many([4]) == [40]


def test_a_function_that_loses_results_is_an_error_not_a_wrong_answer():
    calls = BatchedCalls(lambda items: items[:-1])
    with pytest.raises(RuntimeError, match="returned 0 results for 1 items"):
        calls.many([1])


def test_max_batch_must_be_positive():
    with pytest.raises(ValueError, match="max_batch must be 1 or more; received 0"):
        BatchedCalls(lambda items: items, max_batch=0)


def test_one_callers_items_are_read_in_one_batch_in_order():
    calls = BatchedCalls(lambda items: [item * 2 for item in items])
    assert calls.many([3, 1, 2]) == [6, 2, 4]
    assert calls.many([]) == []
    assert list(calls.batch_sizes) == [3]


def test_several_callers_items_queued_during_a_batch_share_the_next_one():
    function = Gated()
    calls = BatchedCalls(function)
    _, first_threads = call_in_threads(calls, [1])
    assert function.entered.wait(WAIT)
    answers = {}
    threads = [
        threading.Thread(target=lambda name=name, items=items: answers.__setitem__(name, calls.many(items)))
        for name, items in (("a", [2, 3, 4]), ("b", [5, 6]))
    ]
    for thread in threads:
        thread.start()
    wait_until_queued(calls, 5)
    function.hold.set()
    for thread in first_threads + threads:
        thread.join(WAIT)
    assert answers == {"a": [20, 30, 40], "b": [50, 60]}
    assert list(calls.batch_sizes) == [1, 5]


def test_a_cached_key_is_not_read_again_and_new_keys_are_read_together():
    read = []

    def function(items):
        read.append(list(items))
        return [item + 100 for item in items]

    calls = CachedBatchedCalls(function, max_entries=3)
    assert calls.many([("a", 1), ("b", 2)]) == [101, 102]
    assert calls.many([("b", 2), ("c", 3), ("a", 1), ("c", 3)]) == [102, 103, 101, 103]  # c read once
    assert read == [[1, 2], [3]]
    calls.many([("d", 4)])  # the fourth key drops the least recently used: b
    assert calls.many([("a", 1), ("b", 2)]) == [101, 102]
    assert read == [[1, 2], [3], [4], [2]]
    assert list(calls.batch_sizes) == [2, 1, 1, 1]


def test_a_failed_batch_is_remembered_by_no_key():
    calls = CachedBatchedCalls(Gated(fail_on=2))
    calls._calls._function.hold.set()
    with pytest.raises(ValueError, match="cannot score 2"):
        calls.many([("a", 1), ("b", 2)])
    assert calls.many([("a", 1)]) == [10]
