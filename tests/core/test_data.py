"""Streaming helpers of the data layer."""

import pytest


def test_prefetch_keeps_order_raises_and_stops_early():
    import threading

    from concerto_core.data import prefetch

    assert list(prefetch(iter(range(50)), depth=3, convert=lambda x: x * 2)) == list(range(0, 100, 2))

    def failing():
        yield 1
        raise ValueError("bad shard")

    got = []
    with pytest.raises(ValueError, match="bad shard"):
        for item in prefetch(failing()):
            got.append(item)
    assert got == [1]
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    stream = prefetch(endless(), depth=2)
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close()  # consumer stops: the producer thread must stop too
    for thread in threading.enumerate():
        if thread.name == "concerto-prefetch":
            thread.join(timeout=5)
            assert not thread.is_alive()
    assert len(produced) < 10
