"""Padding must not change predictions, and padded positions never enter the loss."""

import numpy as np
import torch

from stream_kt.data.batches import make_batch


def scored_probs(model, batch):
    with torch.no_grad():
        probs = torch.sigmoid(model(batch))
    return [probs[row][batch.next_mask[row]].numpy() for row in range(len(probs))]


def test_pre_post_and_no_padding_give_the_same_predictions(model, sequences):
    alone = [scored_probs(model, make_batch([seq]))[0] for seq in sequences]
    post = scored_probs(model, make_batch(sequences, pad="post", length=40))
    pre = scored_probs(model, make_batch(sequences, pad="pre", length=40))
    for expected, a, b in zip(alone, post, pre):
        np.testing.assert_allclose(a, expected, atol=1e-6)
        np.testing.assert_allclose(b, expected, atol=1e-6)


def test_garbage_in_padded_positions_changes_nothing(model, sequences):
    batch = make_batch(sequences, pad="pre", length=40)
    reference = scored_probs(model, batch)
    padding = ~batch.mask
    batch.items[padding] = 5
    batch.correct[padding] = 1
    for expected, got in zip(reference, scored_probs(model, batch)):
        np.testing.assert_allclose(got, expected, atol=1e-6)


def test_padding_never_enters_the_loss(model, sequences):
    with torch.no_grad():
        tight = model.loss(make_batch(sequences)).item()
        padded = model.loss(make_batch(sequences, pad="pre", length=64)).item()
    assert abs(tight - padded) < 1e-6
