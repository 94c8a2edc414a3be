"""Small pure functions of the candidate search (:mod:`~opto.optimizers.candidates`).

Generation schedules (:func:`spread` of temperatures, :func:`weighted_order` of LLM
profiles), the ``majority`` selection (complete-linkage clusters of similar suggestions),
reading an LLM's reply for the judge's choice (:func:`chosen_index`) or a list of experts
(:func:`string_list`), and the checks of the search's settings.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from typing import Any

from opto.optimizers.parsing import iter_json_objects, load_json_like

__all__ = [
    "MAJORITY_THRESHOLD",
    "check_count",
    "check_name",
    "check_temperatures",
    "chosen_index",
    "majority",
    "profile_name",
    "spread",
    "string_list",
    "weighted_order",
]

MAJORITY_THRESHOLD = 0.2
"""Largest distance (1 - similarity ratio) between two suggestions of one cluster."""


def spread(low: float, high: float, n: int) -> list[float]:
    """``n`` temperatures from ``high`` down to ``low``."""
    step = (high - low) / max(1, n - 1)
    return [round(high - i * step, 6) for i in range(n)]


def weighted_order(names: Sequence[str], weights: Sequence[float], n: int) -> list[int]:
    """Indexes of ``names`` for ``n`` slots, shares proportional to ``weights`` (smooth
    weighted round robin: deterministic and evenly interleaved)."""
    current = [0.0] * len(names)
    total = sum(weights)
    order = []
    for _ in range(n):
        for i, weight in enumerate(weights):
            current[i] += weight
        best = max(range(len(names)), key=lambda i: current[i])
        current[best] -= total
        order.append(best)
    return order


def distance(a: str, b: str) -> float:
    return 1.0 - difflib.SequenceMatcher(None, a, b).ratio()


def majority(texts: Sequence[str], threshold: float = MAJORITY_THRESHOLD) -> int:
    """Index of the medoid of the largest complete-linkage cluster (ties: latest)."""
    n = len(texts)
    dist = [[distance(texts[i], texts[j]) if i != j else 0.0 for j in range(n)] for i in range(n)]
    clusters = [[i] for i in range(n)]
    while len(clusters) > 1:
        best: tuple[float, int, int] | None = None
        for a in range(len(clusters)):
            for b in range(a + 1, len(clusters)):
                link = max(dist[i][j] for i in clusters[a] for j in clusters[b])
                if link <= threshold and (best is None or link < best[0]):
                    best = (link, a, b)
        if best is None:
            break
        _, a, b = best
        clusters[a] = clusters[a] + clusters.pop(b)
    largest = max(clusters, key=lambda c: (len(c), max(c)))
    return min(largest, key=lambda i: (sum(dist[i][j] for j in largest), -i))


def check_count(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"num_responses must be a positive int, got {n!r}.")
    return n


def check_temperatures(pair: Sequence[float]) -> tuple[float, float]:
    try:
        low, high = (float(t) for t in pair)
    except (TypeError, ValueError):
        raise ValueError(
            f"temperature_min_max must be two numbers [min, max], got {pair!r}."
        ) from None
    if not 0.0 <= low <= high:
        raise ValueError(f"temperature_min_max needs 0 <= min <= max, got {pair!r}.")
    return low, high


def check_name(name: str, valid: Sequence[str]) -> str:
    if name not in valid:
        raise ValueError(f"unknown technique {name!r}; choose one of {list(valid)}.")
    return name


def profile_name(profile: Any) -> str:
    if isinstance(profile, str):
        return profile
    return str(getattr(profile, "model_name", "") or type(profile).__name__)


def string_list(text: str) -> list[str]:
    """A list of strings from a reply: a JSON array, or an object holding one."""
    values: Any = None
    start, end = text.find("["), text.rfind("]")
    if 0 <= start < end:
        try:
            values = load_json_like(text[start : end + 1])
        except ValueError:
            values = None
    if not isinstance(values, list):
        for obj in iter_json_objects(text):
            lists = [v for v in obj.values() if isinstance(v, list)]
            if len(lists) == 1:
                values = lists[0]
                break
    if not isinstance(values, list):
        return []
    return [v.strip() for v in values if isinstance(v, str) and v.strip()]


def chosen_index(text: str, count: int) -> int | None:
    """0-based index of the candidate a judge named (``"best": k``, or ``Candidate k``)."""
    for obj in iter_json_objects(text):
        best = obj.get("best")
        if isinstance(best, str) and best.strip().isdigit():
            best = int(best.strip())
        if isinstance(best, int) and not isinstance(best, bool) and 1 <= best <= count:
            return best - 1
    match = re.search(r"(?:candidate\s*#?\s*|^\s*)(\d+)\b", text, re.IGNORECASE)
    if match and 1 <= int(match.group(1)) <= count:
        return int(match.group(1)) - 1
    return None
