"""``loss_with_mastery``, what distillation matches to a teacher: the offline twin of the streamed mastery."""

import numpy as np
import pytest
import torch

from stream_kt.data.batches import make_batch
from stream_kt.models import MODELS
from stream_kt.training.distill import distillable
from tests.models.conftest import NUM_ITEMS, small_model

DISTILLABLE = sorted(name for name, cls in MODELS.items() if distillable(cls))


def test_the_recurrent_and_the_attention_students_are_distillable():
    assert {"dkt", "dkt_plus", "lastquery"} <= set(DISTILLABLE)


@pytest.mark.parametrize("name", DISTILLABLE)
@pytest.mark.parametrize("pad", ["post", "pre"])
def test_mastery_logits_are_the_streamed_mastery_and_the_loss_is_the_models(name, pad, sequences):
    model = small_model(name)  # eval mode: no dropout, so one pass is comparable with another
    batch = make_batch(sequences, pad=pad, length=40)
    with torch.no_grad():
        loss, mastery_logits = model.loss_with_mastery(batch)
        assert mastery_logits.shape == (len(sequences), 40, NUM_ITEMS)
        assert loss.item() == pytest.approx(model.loss(batch).item(), abs=1e-6)
        for row, (items, correct) in enumerate(sequences):
            state = model.initial_state(1)
            streamed = []
            for t in range(len(items)):
                out = model.step(state, torch.tensor([items[t]]), torch.tensor([correct[t]]))
                streamed.append(out.mastery[0].numpy())
                state = out.state
            offline = torch.sigmoid(mastery_logits[row][batch.mask[row]]).numpy()  # (n, V) after each interaction
            np.testing.assert_allclose(offline, np.array(streamed), atol=1e-5)
