import itertools

import pytest
from torch.utils.data import BatchSampler

from plmkit.core.training import MethodError
from plmkit.prompt_tuning.sampler import ClassBalancedSampler


def _batches(labels, batch_size, epoch=0):
    sampler = ClassBalancedSampler(labels, batch_size, seed=3)
    sampler.set_epoch(epoch)
    return sampler, list(BatchSampler(sampler, batch_size, drop_last=False))


@pytest.mark.parametrize(("num_classes", "batch_size"), [(2, 8), (6, 8), (3, 4), (2, 5), (6, 16)])
def test_every_batch_has_positive_and_negative_pairs(num_classes, batch_size):
    labels = [i % num_classes for i in range(16 * num_classes)]
    sampler, batches = _batches(labels, batch_size)
    assert len(batches) == -(-len(labels) // batch_size) and all(len(b) == batch_size for b in batches)
    for batch in batches:
        classes = [labels[i] for i in batch]
        assert len(set(classes)) >= 2
        assert any(classes.count(c) >= 2 for c in set(classes))
    # Over an epoch the classes are used evenly.
    counts = [sum(labels[i] == c for b in batches for i in b) for c in range(num_classes)]
    assert max(counts) - min(counts) <= batch_size


def test_epochs_reshuffle_and_cover_the_data():
    labels = [0] * 16 + [1] * 16
    _, first = _batches(labels, 8, epoch=0)
    _, second = _batches(labels, 8, epoch=1)
    assert first != second
    assert set(itertools.chain(*first)) == set(range(32))


def test_bad_inputs_are_explained():
    with pytest.raises(MethodError, match="two classes"):
        ClassBalancedSampler([0, 0, 0, 0], 4)
    with pytest.raises(MethodError, match=">= 2 training examples per class"):
        ClassBalancedSampler([0, 0, 1], 4)
    with pytest.raises(MethodError, match="batch size >= 4"):
        ClassBalancedSampler([0, 0, 1, 1], 3)
