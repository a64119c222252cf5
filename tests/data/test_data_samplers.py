from collections import Counter

import pytest

from deit.data import EvalSampler, RepeatAugSampler, ShuffleSampler


def _shards(cls, n, world, epoch=0, **kw):
    out = []
    for r in range(world):
        s = cls(n, num_replicas=world, rank=r, **kw)
        s.set_epoch(epoch)
        out.append(list(s))
    return out


@pytest.mark.parametrize("n, world", [(100, 1), (100, 2), (1000, 4), (37, 8), (5, 8)])
def test_repeat_aug_gives_each_index_exactly_three_times_per_epoch(n, world):
    shards = _shards(RepeatAugSampler, n, world, num_repeats=3, seed=1)
    positions = [p for sh in shards for _, (_, _, p) in sh]
    assert len(positions) == len(set(positions))  # ranks get disjoint parts of the stream
    assert len({len(sh) for sh in shards}) == 1  # equal shards: no rank waits at the last step
    counts = Counter(i for sh in shards for i, _ in sh)
    total = sum(len(sh) for sh in shards)
    if n >= 3 * world:
        assert set(counts.values()) == {3}
        assert n <= total < n + 3 * world  # epoch length about the dataset size, not 3x
    else:  # fewer images than the ranks need for equal shards: whole permutations repeat, 3 copies each
        assert all(c % 3 == 0 for c in counts.values()) and total == 3 * world


def test_repeat_aug_copies_are_spread_and_epochs_differ():
    s = RepeatAugSampler(12, num_repeats=3, seed=0)
    s.set_epoch(0)
    e0 = [i for i, _ in s]
    assert e0[0] == e0[1] == e0[2]  # one process: the three copies are consecutive
    s.set_epoch(1)
    assert [i for i, _ in s] != e0
    shards = _shards(RepeatAugSampler, 12, 3, num_repeats=3)
    assert shards[0][0][0] == shards[1][0][0] == shards[2][0][0]  # three ranks: one copy each


@pytest.mark.parametrize("n", [7, 10])
def test_eval_sampler_visits_every_sample_once_over_two_ranks(n):
    shards = _shards(EvalSampler, n, 2)
    flat = [i for sh in shards for i, _ in sh]
    assert sorted(flat) == list(range(n))  # no padding, no duplicates
    assert [len(s) for s in shards] == [len(EvalSampler(n, num_replicas=2, rank=r)) for r in range(2)]


def test_shuffle_sampler_covers_all_and_pads_evenly():
    shards = _shards(ShuffleSampler, 10, 3, seed=4)
    assert [len(s) for s in shards] == [4, 4, 4]
    assert set(i for sh in shards for i, _ in sh) == set(range(10))


def test_start_batch_skips_whole_batches_and_len_stays_full():
    s = RepeatAugSampler(100, num_repeats=3, seed=2, batch_size=8)
    s.set_epoch(5)
    full = list(s)
    s.set_epoch(5, start_batch=3)
    assert list(s) == full[24:] and len(s) == len(full)
    s.set_epoch(6)
    assert len(list(s)) == len(full)
    with pytest.raises(ValueError):
        RepeatAugSampler(10, num_replicas=2, rank=2)
