"""The predictor's batching: planned batches are optimal under their cost, and never change answers."""

import itertools
import random
from pathlib import Path

import numpy as np
import pytest
from conftest import seed_records

from stance.predict import Predictor, plan_batches


def _cost(lengths: list[int], batches: list[list[int]], run_cost: int) -> int:
    return sum(run_cost + len(b) * max(lengths[i] for i in b) for b in batches)


def _best_cost_by_brute_force(lengths: list[int], max_batch: int, run_cost: int) -> int:
    """Every way of cutting the sorted list into runs of at most `max_batch`."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    best = None
    for cuts in itertools.product([False, True], repeat=len(order) - 1):
        batches, current = [], [order[0]]
        for index, cut in zip(order[1:], cuts, strict=True):
            if cut:
                batches.append(current)
                current = []
            current.append(index)
        batches.append(current)
        if max(map(len, batches)) <= max_batch:
            cost = _cost(lengths, batches, run_cost)
            best = cost if best is None else min(best, cost)
    return best


@pytest.mark.parametrize("seed", range(20))
def test_planned_batches_cost_no_more_than_any_other_cut(seed: int) -> None:
    rng = random.Random(seed)
    lengths = [rng.randint(3, 120) for _ in range(rng.randint(1, 11))]
    max_batch, run_cost = rng.randint(1, 6), rng.choice([0, 14, 40])
    batches = plan_batches(lengths, max_batch, run_cost)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))  # each index exactly once
    assert all(1 <= len(b) <= max_batch for b in batches)
    assert _cost(lengths, batches, run_cost) == _best_cost_by_brute_force(lengths, max_batch, run_cost)


def test_mixed_lengths_are_cut_and_equal_lengths_stay_together() -> None:
    # What 8 concurrent requests bring: short and long sentences in one batch.
    mixed = plan_batches([12, 80, 14, 78, 11, 82, 13, 79], max_batch=32)
    assert sorted(map(sorted, mixed)) == [[0, 2, 4, 6], [1, 3, 5, 7]]
    assert sorted(map(len, plan_batches([40] * 70, max_batch=32))) == [6, 32, 32]
    assert plan_batches([], max_batch=32) == []


def test_batching_never_changes_the_answers(tiny_trained_model: Path) -> None:
    texts = [r["text"] for r in seed_records()]
    texts = [*texts, " ".join(texts[:12])]  # one sentence long enough to be truncated
    reference = Predictor(tiny_trained_model, backend="torch", batch_size=1)
    batched = Predictor(tiny_trained_model, backend="torch", batch_size=32)
    one = reference.probability_matrices(texts)
    many = batched.probability_matrices(texts)
    for head in one:
        np.testing.assert_allclose(many[head], one[head], atol=1e-5)
    shuffled = random.Random(0).sample(texts, len(texts))
    predictions = batched.predict(shuffled)
    assert [p.text for p in predictions] == shuffled  # input order, whatever the batching
    alone = [reference.predict([text])[0].truncated for text in shuffled]
    assert [p.truncated for p in predictions] == alone  # flags follow their sentences
    assert predictions[shuffled.index(texts[-1])].truncated and not all(alone)
