"""Generator functions cannot be bundled: a clear TypeError at decoration names the fix."""

from __future__ import annotations

import pytest
from opto.trace import bundle, model, node


def test_generator_function_is_rejected_when_decorated():
    with pytest.raises(
        TypeError, match=r"generator function '[^']*count_up'.*return list\(\.\.\.\)"
    ):

        @bundle()
        def count_up(n):
            """Yield 0..n-1."""
            yield from range(n)


def test_async_generator_function_is_rejected_when_decorated():
    with pytest.raises(TypeError, match=r"async generator function '[^']*stream'"):

        @bundle()
        async def stream(n):
            """Yield n."""
            yield n


def test_generator_method_and_callable_object_are_rejected():
    with pytest.raises(TypeError, match="generator function"):

        @model
        class Agent:
            @bundle(trainable=True)
            def steps(self, n):
                """Yield steps."""
                yield n

    class Counter:
        def __call__(self, n):
            yield n

    with pytest.raises(TypeError, match="generator function 'Counter'"):
        bundle()(Counter())


def test_a_function_returning_the_collected_items_is_traced():
    @bundle()
    def count_up(n):
        """The list 0..n-1."""
        return list(range(n))

    out = count_up(node(3))
    assert out.data == [0, 1, 2] and out.parents[0].data == 3
