"""BKT against numbers worked out by hand."""

import numpy as np
import torch

from stream_kt.data.batches import make_batch
from stream_kt.models import build_model


def bkt_with(prior, learn, guess, slip):
    """Two skills; skill 0 gets the given parameters (guess and slip below the 0.5 caps)."""
    model = build_model("bkt", num_items=2).eval()
    logit = lambda p: float(np.log(p / (1 - p)))  # noqa: E731
    with torch.no_grad():
        model.prior_logit[0] = logit(prior)
        model.learn_logit[0] = logit(learn)
        model.guess_logit[0] = logit(guess / 0.5)
        model.slip_logit[0] = logit(slip / 0.5)
    return model


# prior 0.3, learn 0.2, guess 0.25, slip 0.1; answers right, wrong, right on skill 0:
#   t=0  P(L)=0.3       P(correct) = 0.3*0.9 + 0.7*0.25 = 0.445
#        right: P(L|right) = 0.27/0.445 = 0.606742; learn: 0.606742 + 0.393258*0.2 = 0.685393
#   t=1  P(correct) = 0.685393*0.9 + 0.314607*0.25 = 0.695506
#        wrong: P(L|wrong) = 0.0685393/(0.0685393 + 0.314607*0.75) = 0.225092; learn: 0.380074
#   t=2  P(correct) = 0.380074*0.9 + 0.619926*0.25 = 0.497048
#        right: P(L|right) = 0.688196; learn: 0.750557
HAND = {"p_correct": [0.445, 0.695506, 0.497048], "p_known_after": [0.685393, 0.380074, 0.750557]}


def test_step_follows_the_hand_computed_filter():
    model = bkt_with(prior=0.3, learn=0.2, guess=0.25, slip=0.1)
    state = model.initial_state(1)
    with torch.no_grad():
        for t, answer in enumerate([1, 0, 1]):
            out = model.step(state, torch.tensor([0]), torch.tensor([answer]))
            state = out.state
            assert abs(out.p_correct.item() - HAND["p_correct"][t]) < 1e-5
            assert abs(state["p_known"][0, 0].item() - HAND["p_known_after"][t]) < 1e-5
            # mastery of skill 0 is P(correct) at the next attempt; skill 1 is untouched
            expected = HAND["p_known_after"][t] * 0.9 + (1 - HAND["p_known_after"][t]) * 0.25
            assert abs(out.mastery[0, 0].item() - expected) < 1e-5
            assert abs(state["p_known"][0, 1].item() - 0.4) < 1e-6


def test_forward_scores_the_same_numbers_and_other_skills_are_independent():
    model = bkt_with(prior=0.3, learn=0.2, guess=0.25, slip=0.1)
    # skill 1 in between must not move skill 0
    batch = make_batch([(np.array([0, 1, 0, 1, 0]), np.array([1, 1, 0, 0, 1]))])
    with torch.no_grad():
        probs = torch.sigmoid(model(batch))[0]
    # predictions for the 2nd and 4th positions' next items are skill 0's attempts 2 and 3
    assert abs(probs[1].item() - HAND["p_correct"][1]) < 1e-5
    assert abs(probs[3].item() - HAND["p_correct"][2]) < 1e-5


def test_guess_and_slip_stay_below_their_caps():
    model = build_model("bkt", num_items=3)
    with torch.no_grad():
        model.guess_logit.fill_(50.0)
        model.slip_logit.fill_(50.0)
    params = model.parameters_by_skill()
    assert params["guess"].max() <= 0.5 and params["slip"].max() <= 0.5
