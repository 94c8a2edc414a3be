"""DataLoader: reference orderings, exact epochs, seeding, resumable cursor, dataset errors."""

import random

import pytest
from opto.trainers import DataLoader, DatasetError
from opto.trainers.loader import as_dataset

DATA = {"inputs": [1, 2, 3, 4, 5], "infos": [1, 2, 3, 4, 5]}


def xs(batches):
    return [b[0] for b in batches]


def test_reference_orderings_without_shuffle():
    loader = DataLoader(DATA, batch_size=2, shuffle=False)
    assert xs(loader) == [[1, 2], [3, 4], [5, 1]]
    assert loader.n_epochs == 1  # one pass counts once, even with the wrapped batch
    assert xs(loader) == [[1, 2], [3, 4], [5, 1]]
    assert loader.n_epochs == 2
    stream = DataLoader(DATA, batch_size=2, shuffle=False)
    assert [stream.sample()[0] for _ in range(6)] == [
        [1, 2],
        [3, 4],
        [5, 1],
        [2, 3],
        [4, 5],
        [1, 2],
    ]


def test_drop_last_and_short_last_batch():
    assert xs(DataLoader(DATA, 2, shuffle=False, drop_last=True, wrap=False)) == [[1, 2], [3, 4]]
    assert xs(DataLoader(DATA, 2, shuffle=False, wrap=False)) == [[1, 2], [3, 4], [5]]
    with pytest.raises(ValueError, match="exclude"):
        DataLoader(DATA, 2, drop_last=True, wrap=True)


def test_every_example_once_per_epoch_and_same_order_for_same_seed():
    data = {"inputs": list(range(20)), "infos": [None] * 20}
    a = DataLoader(data, 4, seed=7)
    b = DataLoader(data, 4, seed=7)
    for _ in range(3):
        epoch_a = [x for batch in xs(a) for x in batch]
        assert sorted(epoch_a) == list(range(20))
        assert epoch_a == [x for batch in xs(b) for x in batch]
    assert a.n_epochs == 3
    assert xs(DataLoader(data, 4, seed=8)) != xs(DataLoader(data, 4, seed=7))


def test_loader_never_touches_the_global_rng():
    random.seed(123)
    expected = random.random()
    random.seed(123)
    list(DataLoader({"inputs": list(range(10)), "infos": [0] * 10}, 3, seed=1))
    assert random.random() == expected


def test_replacement_draws_a_bootstrap_sample():
    data = {"inputs": list(range(50)), "infos": [0] * 50}
    epoch = [x for batch in xs(DataLoader(data, 5, replacement=True, seed=3)) for x in batch]
    assert len(epoch) == 50 and len(set(epoch)) < 50


def test_state_dict_resumes_mid_epoch_exactly():
    data = {"inputs": list(range(11)), "infos": list(range(11))}
    full = DataLoader(data, 3, seed=5)
    expected = [full.sample()[0] for _ in range(9)]
    part = DataLoader(data, 3, seed=5)
    first = [part.sample()[0] for _ in range(4)]
    resumed = DataLoader(data, 3, seed=999)
    resumed.load_state_dict(part.state_dict())
    assert first + [resumed.sample()[0] for _ in range(5)] == expected
    assert resumed.n_epochs == full.n_epochs
    with pytest.raises(DatasetError, match="same dataset"):
        DataLoader({"inputs": [1], "infos": [1]}).load_state_dict(part.state_dict())


def test_dataset_forms_and_errors():
    assert as_dataset([(1, "a"), (2, "b")]) == {"inputs": [1, 2], "infos": ["a", "b"]}
    with pytest.raises(DatasetError, match="2 inputs but 1 infos"):
        as_dataset({"inputs": [1, 2], "infos": [1]})
    with pytest.raises(DatasetError, match="empty"):
        as_dataset({"inputs": [], "infos": []})
    with pytest.raises(DatasetError, match="missing the keys"):
        as_dataset({"inputs": [1]})
    with pytest.raises(DatasetError, match="not an"):
        as_dataset([(1, 2, 3)])
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(DATA, 0)


def test_next_gives_batches_then_stop_iteration_once_then_the_next_epoch():
    loader = DataLoader({"inputs": [1, 2, 3, 4, 5], "infos": [1, 2, 3, 4, 5]}, 2, shuffle=False)
    assert next(loader) == ([1, 2], [1, 2])
    assert next(loader)[0] == [3, 4]
    assert next(loader)[0] == [5, 1]
    with pytest.raises(StopIteration):
        next(loader)
    assert next(loader)[0] == [1, 2]
    # a for loop still gives a whole pass, and next() continues after it
    loader2 = DataLoader({"inputs": [1, 2, 3], "infos": [1, 2, 3]}, 1, shuffle=False)
    assert next(loader2)[0] == [1]
    assert [xs for xs, _ in loader2] == [[2], [3]]
    assert next(loader2)[0] == [1]


def test_next_with_drop_last_stops_at_the_short_tail_and_start_new_epoch_resets():
    data = {"inputs": [1, 2, 3], "infos": [1, 2, 3]}
    loader = DataLoader(data, 2, shuffle=False, wrap=False, drop_last=True)
    assert next(loader)[0] == [1, 2]
    with pytest.raises(StopIteration):
        next(loader)
    assert next(loader)[0] == [1, 2]
    loader._start_new_epoch()
    assert next(loader)[0] == [1, 2]
