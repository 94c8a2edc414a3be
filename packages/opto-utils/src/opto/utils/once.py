"""Create a shared value once, even when several threads ask for it at the same time."""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import threading

__all__ = ["get_or_create"]

K = TypeVar("K")
V = TypeVar("V")


def get_or_create(
    cache: MutableMapping[K, V],
    key: K,
    lock: threading.Lock | threading.RLock,
    create: Callable[[], V],
) -> V:
    """``cache[key]``, created by ``create()`` and stored on first use.

    A hit costs one lookup and no locking. On a miss the lookup is repeated under `lock`, so
    concurrent callers run `create` once and all get the same value. A stored None counts as
    missing. `create` runs while `lock` is held: it may take the same lock again only when
    `lock` is an ``RLock``.
    """
    value = cache.get(key)
    if value is not None:
        return value
    with lock:
        value = cache.get(key)
        if value is None:
            value = cache[key] = create()
    return value
