"""FIFOBuffer: bounded history, size 0 stores nothing, None is unbounded."""

import pytest
from opto.optimizers.buffers import FIFOBuffer


def test_keeps_the_last_size_items_oldest_first():
    buffer = FIFOBuffer(3)
    for item in range(5):
        buffer.add(item)
    assert list(buffer) == [2, 3, 4]
    assert len(buffer) == 3
    assert buffer[0] == 2
    assert buffer[-1] == 4
    assert buffer.buffer == [2, 3, 4]


def test_size_zero_stores_nothing():
    buffer = FIFOBuffer(0)
    buffer.add("x")
    assert len(buffer) == 0
    assert list(buffer) == []


def test_none_is_unbounded():
    buffer = FIFOBuffer(None, range(1000))
    assert len(buffer) == 1000
    assert buffer[0] == 0


def test_initial_items_respect_the_bound_and_clear_forgets():
    buffer = FIFOBuffer(2, ["a", "b", "c"])
    assert list(buffer) == ["b", "c"]
    buffer.clear()
    assert len(buffer) == 0


def test_iteration_is_over_a_snapshot():
    buffer = FIFOBuffer(5, [1, 2])
    for item in buffer:
        buffer.add(item * 10)
    assert list(buffer) == [1, 2, 10, 20]


@pytest.mark.parametrize("size", [-1, 1.5, "3", True])
def test_invalid_sizes_are_rejected_with_a_clear_error(size):
    with pytest.raises(ValueError, match="FIFOBuffer size"):
        FIFOBuffer(size)
