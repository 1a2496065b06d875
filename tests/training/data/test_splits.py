from __future__ import annotations

import pytest

from training.data.splits import holdout_split


@pytest.mark.parametrize("count", [2, 3, 10])
def test_holdout_split_keeps_one_of_each_and_covers_every_index(count: int) -> None:
    kept, held = holdout_split(count, 0.99, seed=1)
    assert kept and held
    assert sorted(kept + held) == list(range(count))


def test_holdout_split_is_a_function_of_the_seed() -> None:
    assert holdout_split(20, 0.25, seed=4) == holdout_split(20, 0.25, seed=4)
    assert holdout_split(20, 0.25, seed=4) != holdout_split(20, 0.25, seed=5)


def test_a_single_sample_is_kept() -> None:
    assert holdout_split(1, 0.5, seed=0) == ([0], [])
