"""The ensemble predicts the mean of its members, offline and streamed; it is made from trained
members, never trained as one."""

import pytest
import torch

from stream_kt.data.batches import make_batch
from stream_kt.errors import ConfigError, StreamKTError
from stream_kt.models import build_model
from stream_kt.models.ensemble import Ensemble, mean_probability_logit
from tests.models.conftest import NUM_ITEMS

DKT = {"model": "dkt", "embed_dim": 16, "hidden_size": 24, "dropout": 0.0}
LASTQUERY = {"model": "lastquery", "dim": 16, "heads": 2, "hidden_size": 24, "dropout": 0.0}


def trained_like_members():
    """Two members with unrelated random weights, as two training runs would leave them."""
    torch.manual_seed(1)
    dkt = build_model("dkt", num_items=NUM_ITEMS, **{k: v for k, v in DKT.items() if k != "model"}).eval()
    torch.manual_seed(2)
    lastquery = build_model(
        "lastquery", num_items=NUM_ITEMS, **{k: v for k, v in LASTQUERY.items() if k != "model"}
    ).eval()
    return [dkt, lastquery]


def test_mean_probability_logit_is_the_logit_of_the_mean_probability():
    logits = torch.tensor([[0.3, -2.0, 4.0, -8.0, 0.0], [1.7, 0.5, -3.0, -9.0, 0.0], [-0.4, 2.5, 6.0, -7.5, 0.0]])
    combined = mean_probability_logit(logits, torch.full((3,), 1 / 3))
    torch.testing.assert_close(torch.sigmoid(combined), torch.sigmoid(logits).mean(0), atol=1e-6, rtol=0)
    assert combined[-1] == 0.0  # three coin flips average to a coin flip
    saturated = mean_probability_logit(torch.tensor([[200.0, -200.0], [150.0, -300.0]]), torch.tensor([0.5, 0.5]))
    assert torch.isfinite(saturated).all() and saturated[0] > 100 and saturated[1] < -100
    weighted = mean_probability_logit(logits, torch.tensor([0.6, 0.4, 0.0]))  # a zero weight drops a member
    torch.testing.assert_close(
        torch.sigmoid(weighted), 0.6 * torch.sigmoid(logits[0]) + 0.4 * torch.sigmoid(logits[1]), atol=1e-6, rtol=0
    )


def test_weighted_ensemble_steps_and_scores_the_weighted_mean(sequences):
    members = trained_like_members()
    ensemble = Ensemble.of(members, weights=(3.0, 1.0))
    batch = make_batch(sequences)
    with torch.no_grad():
        expected = 0.75 * torch.sigmoid(members[0](batch)) + 0.25 * torch.sigmoid(members[1](batch))
        torch.testing.assert_close(
            torch.sigmoid(ensemble(batch))[batch.next_mask], expected[batch.next_mask], atol=1e-6, rtol=0
        )
        state = ensemble.initial_state(2)
        out = ensemble.step(state, torch.tensor([1, 2]), torch.tensor([1, 0]))
        parts = [m.step(m.initial_state(2), torch.tensor([1, 2]), torch.tensor([1, 0])) for m in members]
    torch.testing.assert_close(out.mastery, 0.75 * parts[0].mastery + 0.25 * parts[1].mastery, atol=1e-6, rtol=0)
    with pytest.raises(ConfigError, match="one non-negative weight per member"):
        Ensemble.of(members, weights=(1.0,))


def test_forward_is_the_mean_of_the_members_probabilities(sequences):
    members = trained_like_members()
    ensemble = Ensemble.of(members)
    batch = make_batch(sequences)
    with torch.no_grad():
        expected = torch.stack([torch.sigmoid(m(batch)) for m in members]).mean(0)
        got = torch.sigmoid(ensemble(batch))
    scored = batch.next_mask
    torch.testing.assert_close(got[scored], expected[scored], atol=1e-6, rtol=0)
    # and it is not simply one member's prediction
    assert (got[scored] - torch.sigmoid(members[0](batch))[scored]).abs().max() > 1e-3


def test_step_carries_every_members_state_and_averages_them():
    members = trained_like_members()
    ensemble = Ensemble.of(members)
    items, correct = torch.tensor([3, 7, 0]), torch.tensor([1, 0, 1])
    with torch.no_grad():
        out = ensemble.step(ensemble.initial_state(3), items, correct)
        alone = [m.step(m.initial_state(3), items, correct) for m in members]
    assert set(out.state) == {"0.c", "0.h"} | {f"1.{k}" for k in members[1].initial_state(1)}
    torch.testing.assert_close(out.state["0.h"], alone[0].state["h"], atol=0, rtol=0)
    torch.testing.assert_close(out.state["1.items"], alone[1].state["items"], atol=0, rtol=0)
    torch.testing.assert_close(out.p_correct, (alone[0].p_correct + alone[1].p_correct) / 2, atol=1e-7, rtol=0)
    torch.testing.assert_close(out.mastery, (alone[0].mastery + alone[1].mastery) / 2, atol=1e-7, rtol=0)


def test_training_gives_each_member_the_gradient_of_its_own_loss(sequences):
    torch.manual_seed(0)
    ensemble = build_model("ensemble", num_items=NUM_ITEMS, members=(DKT, LASTQUERY))
    batch = make_batch(sequences)
    loss = ensemble.loss(batch)
    torch.testing.assert_close(loss, ensemble.members[0].loss(batch) + ensemble.members[1].loss(batch))
    loss.backward()
    joint = [p.grad.clone() for p in ensemble.members[0].parameters()]
    ensemble.zero_grad()
    ensemble.members[0].loss(batch).backward()
    for together, alone in zip(joint, (p.grad for p in ensemble.members[0].parameters())):
        torch.testing.assert_close(together, alone)


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ((), "at least one member"),
        (({"model": "ensemble"},), "another model's name"),
        (({"embed_dim": 8},), "another model's name"),
        (({"model": "dkt", "heads": 2},), "ensemble member dkt"),
        (({"model": "dkt", "num_items": NUM_ITEMS + 1},), "vocabulary size differs"),
        (({"model": "nope"},), "unknown model 'nope'"),
    ],
)
def test_a_bad_member_list_is_one_clear_error(members, message):
    with pytest.raises(StreamKTError, match=message):
        build_model("ensemble", num_items=NUM_ITEMS, members=members)


def test_members_of_different_vocabularies_are_refused():
    with pytest.raises(ConfigError, match="different vocabulary sizes"):
        Ensemble.of([build_model("bkt", num_items=NUM_ITEMS), build_model("bkt", num_items=NUM_ITEMS + 2)])


def test_the_ensemble_is_not_trained_directly_and_train_says_how_it_is_made(tmp_path):
    from stream_kt.data.split import Split
    from stream_kt.data.vocab import Vocabulary
    from stream_kt.models import MODELS, trainable_models
    from stream_kt.training.train import TrainConfig, train

    assert not Ensemble.trainable_directly and "stream-kt ensemble" in Ensemble.made_by
    assert all(
        cls.trainable_directly or cls.made_by for cls in MODELS.values()
    )  # a model not trained directly says how it is made
    assert "ensemble" not in trainable_models() and {"dkt", "bkt", "gbdt"} <= set(trainable_models())
    vocab = Vocabulary("skill_id", tuple(str(i) for i in range(NUM_ITEMS)))
    with pytest.raises(ConfigError, match="model ensemble is not trained directly: train its members"):
        train(
            [],
            [],
            vocab,
            Split(("a",), (), (), 0, "holdout"),
            TrainConfig(model="ensemble", epochs=1),
            tmp_path / "never",
        )
    assert not (tmp_path / "never").exists()


def test_an_ensemble_takes_skill_sets_when_every_member_does(monkeypatch):
    from stream_kt.models import MODELS
    from stream_kt.models.sakt import SAKT

    sets = build_model("ensemble", num_items=NUM_ITEMS, max_skills=3, members=(DKT, LASTQUERY))
    assert sets.input_width == 3 and [m.input_width for m in sets.member_models] == [3, 3]  # K reaches every member
    assert (
        sets.config_dict()["max_skills"] == 3
        and "max_skills" not in build_model("ensemble", num_items=NUM_ITEMS, members=(DKT,)).config_dict()
    )
    of = Ensemble.of(sets.member_models)  # from trained members of skill sets: their K
    assert of.input_width == 3 and of.config.max_skills == 3

    class OneSkill(SAKT):
        name = "one_skill"
        takes_skill_sets = False

    monkeypatch.setitem(MODELS, OneSkill.name, OneSkill)
    with pytest.raises(
        ConfigError,
        match="^ensemble member one_skill takes one skill per answer, not skill sets: "
        "an ensemble takes them when every member does$",
    ):
        build_model("ensemble", num_items=NUM_ITEMS, max_skills=3, members=(DKT, {"model": "one_skill"}))
    with pytest.raises(ConfigError, match="^ensemble member dkt: takes 2 skills an answer, the ensemble 3$"):
        build_model("ensemble", num_items=NUM_ITEMS, max_skills=3, members=({**DKT, "max_skills": 2},))
    with pytest.raises(
        ConfigError,
        match=r"^ensemble members take different numbers of skills an answer \[1, 3\]: "
        r"train them on the same --skills$",
    ):
        Ensemble.of([build_model("bkt", num_items=NUM_ITEMS), build_model("bkt", num_items=NUM_ITEMS, max_skills=3)])


def test_members_that_read_question_ids_are_refused_in_one_line():
    """The ensemble's step passes its members no question ids: such members would stream other
    predictions than offline."""
    members = [build_model("dkt", num_items=NUM_ITEMS, num_questions=5), build_model("dkt", num_items=NUM_ITEMS)]
    with pytest.raises(
        ConfigError, match=r"ensemble members that read question ids \(dkt\) are not supported"
    ) as caught:
        Ensemble.of(members)
    assert "\n" not in str(caught.value)
