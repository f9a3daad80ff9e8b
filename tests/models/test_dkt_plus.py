"""DKT+'s regularisers and consistency metrics, checked against the streamed mastery vectors."""

import numpy as np
import torch

from stream_kt.data.batches import make_batch
from stream_kt.data.vocab import EncodedSequence
from stream_kt.models import build_model
from stream_kt.prediction_metrics import auc

ITEMS = np.array([0, 1, 1, 2, 0, 3])
CORRECT = np.array([1, 0, 1, 1, 0, 1])


def model_with(**weights):
    torch.manual_seed(0)
    return build_model("dkt_plus", num_items=4, embed_dim=8, hidden_size=8, dropout=0.0, **weights).eval()


def streamed_mastery(model):
    """y_t after every interaction, from the one-step path (independent of the loss code)."""
    state, ys = model.initial_state(1), []
    with torch.no_grad():
        for item, answer in zip(ITEMS, CORRECT):
            out = model.step(state, torch.tensor([item]), torch.tensor([answer]))
            ys.append(out.mastery[0].numpy().astype(np.float64))
            state = out.state
    return np.array(ys)  # (T, V)


def bce(p, label):
    return -(label * np.log(p) + (1 - label) * np.log(1 - p))


def test_constant_outputs_have_no_waviness_and_a_hand_computed_reconstruction_loss():
    model = model_with(reconstruction_weight=1.0, waviness_l1_weight=1.0, waviness_l2_weight=1.0)
    with torch.no_grad():
        model.out.weight.zero_()
        model.out.bias.copy_(torch.tensor([0.0, 1.0, -1.0, 2.0]))  # y_t = sigmoid(bias) at every t
    batch = make_batch([(ITEMS, CORRECT)])
    p = 1 / (1 + np.exp(-np.array([0.0, 1.0, -1.0, 2.0])))
    next_loss = np.mean([bce(p[i], c) for i, c in zip(ITEMS[1:], CORRECT[1:])])
    reconstruction = np.mean([bce(p[i], c) for i, c in zip(ITEMS, CORRECT)])
    with torch.no_grad():
        assert abs(model.loss(batch).item() - (next_loss + reconstruction)) < 1e-5


def test_loss_adds_each_regulariser_with_its_weight():
    weights = {"reconstruction_weight": 0.1, "waviness_l1_weight": 0.003, "waviness_l2_weight": 3.0}
    model = model_with(**weights)
    ys = streamed_mastery(model)
    next_loss = np.mean([bce(ys[t, ITEMS[t + 1]], CORRECT[t + 1]) for t in range(len(ITEMS) - 1)])
    reconstruction = np.mean([bce(ys[t, ITEMS[t]], CORRECT[t]) for t in range(len(ITEMS))])
    change = np.diff(ys, axis=0)  # (T-1, V)
    expected = next_loss + 0.1 * reconstruction + 0.003 * np.abs(change).mean() + 3.0 * (change**2).mean()
    with torch.no_grad():
        got = model.loss(make_batch([(ITEMS, CORRECT)], pad="pre", length=9)).item()
    assert abs(got - expected) < 1e-5


def test_extra_metrics_report_reconstruction_auc_and_waviness():
    model = model_with()
    ys = streamed_mastery(model)
    change = np.diff(ys, axis=0)
    metrics = model.extra_metrics([EncodedSequence("s", ITEMS, CORRECT)])
    assert abs(metrics["reconstruction_auc"] - auc(CORRECT, ys[np.arange(len(ITEMS)), ITEMS])) < 1e-9
    assert abs(metrics["waviness_l1"] - np.abs(change).mean()) < 1e-6
    assert abs(metrics["waviness_l2"] - np.sqrt((change**2).mean())) < 1e-6
