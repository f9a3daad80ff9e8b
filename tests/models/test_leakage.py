"""Label leakage must be impossible: the prediction for step t+1 reads steps <= t only."""

import numpy as np
import torch

from stream_kt.data.batches import make_batch


def predictions(model, items, correct):
    """P(correct) for steps 1..n-1, each predicted from the steps before it."""
    batch = make_batch([(items, correct)])
    with torch.no_grad():
        return torch.sigmoid(model(batch))[0][batch.next_mask[0]].numpy()


def test_changing_answer_t_leaves_predictions_up_to_t_unchanged(model, sequences):
    items, correct = sequences[1]
    base = predictions(model, items, correct)  # base[s - 1] is the prediction for step s
    for t in range(len(items) - 1):
        flipped = correct.copy()
        flipped[t] = 1 - flipped[t]
        changed = predictions(model, items, flipped)
        # steps 1..t were predicted before answer t was seen
        np.testing.assert_allclose(changed[:t], base[:t], atol=0, rtol=0)
        # and the model does read answer t for step t+1 (the test could fail the other way too),
        # asked when step t+1 repeats item t: BKT's skills are independent, so only a repeat must move
        repeated = items.copy()
        repeated[t + 1] = items[t]
        assert abs(predictions(model, repeated, flipped)[t] - predictions(model, repeated, correct)[t]) > 1e-7


def test_changing_item_t_plus_1_only_changes_which_logit_is_scored(model, sequences):
    """The item asked at t+1 is known when predicting it; its answer is not."""
    items, correct = sequences[1]
    base = predictions(model, items, correct)
    other = items.copy()
    other[10] = (other[10] + 1) % 12
    changed = predictions(model, other, correct)
    np.testing.assert_allclose(changed[:9], base[:9], atol=0, rtol=0)
