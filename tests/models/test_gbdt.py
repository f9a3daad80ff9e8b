"""gbdt: its torch trees are LightGBM's trees, its context counts and transfer features are
the training students' own."""

import lightgbm
import numpy as np
import pytest
import torch

from stream_kt.data.vocab import EncodedSequence
from stream_kt.models import build_model
from stream_kt.models.gbdt import GBDT, feature_names
from stream_kt.training.gbdt_fit import (
    context_counts,
    feature_rows,
    fit_gbdt,
    fit_transfer,
    out_of_fold_rows,
    transfer_statistics,
    with_tables,
    with_trees,
)
from tests.models.conftest import NUM_ITEMS, learnable_students, small_options


def student(name, items, correct):
    return EncodedSequence(name, np.array(items), np.array(correct))


def config():
    return build_model("gbdt", num_items=NUM_ITEMS, **small_options("gbdt")).config


def test_unfitted_predicts_one_half():
    model = GBDT(config())
    out = model.step(model.initial_state(2), torch.tensor([1, 2]), torch.tensor([1, 0]))
    assert torch.equal(out.p_correct, torch.full((2,), 0.5)) and torch.equal(
        out.mastery, torch.full((2, NUM_ITEMS), 0.5)
    )


def test_context_counts_count_what_followed_each_context():
    # item 3 right then item 5: twice, once right; item 3 wrong then item 5: once, right
    students = [student("a", [3, 5, 3, 5], [1, 1, 1, 0]), student("b", [3, 5], [0, 1])]
    tables = context_counts(config(), students)
    model = GBDT(config())
    keys, answers, right = tables[0]
    after = {}
    for previous in ((3, 1), (3, 0)):  # the ctx1 key of "answers item 5 after (item 3, correct)"
        state = model._update(model.initial_state(1), torch.tensor([previous[0]]), torch.tensor([previous[1]]))
        key = model.context_keys(state, torch.tensor([[5]]))[0].item()
        after[previous] = (answers[keys == key].item(), right[keys == key].item())
    assert after == {(3, 1): (2.0, 1.0), (3, 0): (1.0, 1.0)}


def test_features_read_the_tables_and_the_history():
    students = [student("a", [3, 5, 3, 5], [1, 1, 1, 0]), student("b", [3, 5], [0, 1])]
    model = with_tables(config(), students)
    state = model.initial_state(1)
    for item, right in ((3, 1), (5, 1), (3, 1)):
        state = model._update(state, torch.tensor([item]), torch.tensor([right]))
    x = dict(zip(feature_names(config().context), model.features(state, torch.tensor([[5]]))[0, 0].tolist()))
    assert (x["item"], x["prev_item"], x["prev_correct"], x["prev2_item"], x["prev2_correct"]) == (5, 3, 1, 5, 1)
    assert (x["answers"], x["accuracy"], x["item_answers"], x["item_right"], x["since_item"]) == (3, 1.0, 1, 1, 2)
    assert x["ctx1_count"] == 2 and x["ctx2_count"] == 1  # (3 right) -> 5 twice; (5 right, 3 right) -> 5 once
    assert x["ctx3_count"] == 1  # (3 right, 5 right, 3 right) -> 5 once


@pytest.mark.slow
def test_training_rows_never_count_their_own_student():
    """Each student answers a pair of items no one else does: out of fold, that context is unseen."""
    students = [student(f"s{i}", [i, i + 6] * 4, [1, 0] * 4) for i in range(6)]
    x, y = out_of_fold_rows(config(), students, folds=3)
    assert len(y) == 6 * 7
    assert (x[:, feature_names(config().context).index("ctx1_count")] == 0).all()
    # with every student's counts (the validation and held-out students' tables), the same contexts are seen
    x_all, _ = feature_rows(with_tables(config(), students), students)
    assert (x_all[:, feature_names(config().context).index("ctx1_count")] > 0).all()


def test_torch_trees_reproduce_lightgbm():
    tabled = with_tables(config(), learnable_students(100, 30, 0))
    x, y = feature_rows(tabled, learnable_students(100, 30, 1))
    booster = lightgbm.train(
        {"objective": "binary", "num_leaves": 15, "min_data_in_leaf": 5, "verbose": -1}, lightgbm.Dataset(x, y), 40
    )
    model = with_trees(tabled, booster.dump_model())
    assert model.config.num_trees == 40 and model.config.tree_depth > 2
    np.testing.assert_allclose(model.trees(torch.from_numpy(x)).numpy(), booster.predict(x, raw_score=True), atol=1e-4)


def test_fit_learns_and_stops_on_validation():
    model, metrics = fit_gbdt(
        GBDT(config()), learnable_students(240, 40, 0), learnable_students(60, 40, 1), progress=False
    )
    assert 1 <= metrics["best_epoch"] <= 30 and len(metrics["history"]) >= metrics["best_epoch"]
    assert metrics["valid_auc"] > 0.7  # the answers follow ability, difficulty and the previous answer
    assert model.config.num_trees == metrics["best_epoch"]


@pytest.mark.slow
def test_a_fixed_number_of_rounds_grows_the_trees_early_stopping_kept():
    """A refit boosts the early-stopped tree count with no validation: on the same students, the same trees."""
    train = learnable_students(240, 40, 0)
    stopped, metrics = fit_gbdt(GBDT(config()), train, learnable_students(60, 40, 1), progress=False)
    fixed, fixed_metrics = fit_gbdt(GBDT(config()), train, [], progress=False, rounds=metrics["best_epoch"])
    assert fixed.config == stopped.config
    for name, tensor in stopped.state_dict().items():
        assert torch.equal(fixed.state_dict()[name], tensor), name
    assert len(fixed_metrics["history"]) == metrics["best_epoch"] and "valid_auc" not in fixed_metrics["history"][0]


def test_transfer_statistics_count_answers_by_the_last_answer_on_each_other_item():
    students = [student("a", [3, 5, 3, 5], [1, 1, 1, 0]), student("b", [3, 5], [0, 1])]
    answers, right, inputs, items, labels = transfer_statistics(GBDT(config()), students)
    counted = {
        (j, r, q): (answers[j, r, q], right[j, r, q]) for j, r, q in zip(*np.nonzero(answers)) if r > 0
    }  # r 0: j unanswered
    assert counted == {
        (3, 2, 5): (2.0, 1.0),  # a: 3 right -> 5 right, later 3 right -> 5 wrong
        (3, 1, 5): (1.0, 1.0),  # b: 3 wrong -> 5 right
        (3, 2, 3): (1.0, 1.0),
        (5, 2, 3): (1.0, 1.0),
        (5, 2, 5): (1.0, 0.0),
    }
    assert items.tolist() == [5, 5, 3, 5] and labels.tolist() == [1, 1, 1, 0]  # by step, then student
    v = NUM_ITEMS
    last_right, last_wrong, log_right, log_wrong = (inputs[:, k * v : (k + 1) * v] for k in range(4))
    # a's fourth answer (item 5) follows 3 right, 5 right, 3 right: two right answers on 3
    assert last_right[3, 3] == 1 and last_right[3, 5] == 1 and last_wrong[3].sum() == 0
    assert log_right[3, 3] == np.float32(np.log1p(2)) and log_wrong[3].sum() == 0
    assert last_wrong[1, 3] == 1 and log_wrong[1, 3] == np.float32(np.log(2))  # b's second answer: 3 wrong


def test_pair_shift_is_the_smoothed_log_odds_change():
    students = [student("a", [3, 5, 3, 5], [1, 1, 1, 0]), student("b", [3, 5], [0, 1])]
    model = with_tables(config(), students)
    base = model._item_rate()[5]
    s = config().pair_smoothing
    expected = torch.logit((1 + s * base) / (2 + s)) - torch.logit(base)
    assert (
        torch.isclose(model.pair_shift[3, 2, 5], expected) and expected < 0
    )  # 3 right -> 5 right half the time, below 5's rate
    assert (model.pair_shift[:, 0] == 0).all()
    state = model._update(model.initial_state(1), torch.tensor([3]), torch.tensor([1]))
    x = dict(zip(feature_names(config().context), model.features(state, torch.tensor([[5]]))[0, 0].tolist()))
    assert x["pair_sum"] == pytest.approx(expected.item()) and x["pair_min"] == pytest.approx(expected.item())
    assert x["pair_recent"] == pytest.approx(expected.item())  # the answer on 3 was the last one: weight 0.9**0


def test_transfer_regression_learns_which_item_predicts_which():
    rng = np.random.default_rng(0)
    v = NUM_ITEMS
    inputs = np.zeros((400, 4 * v), np.float32)
    last_right_on_2 = rng.integers(0, 2, 400)
    inputs[:, 2] = last_right_on_2
    inputs[:, v + 2] = 1 - last_right_on_2
    items = np.full(400, 7)
    weight, bias = fit_transfer(config(), inputs, items, last_right_on_2.astype(np.float32))
    assert weight[7, 2] > 1 and weight[7, v + 2] < -1  # right on 7 follows right on 2
    assert (weight[:7] == 0).all() and (weight[8:] == 0).all()  # items never answered keep zero rows


def test_transfer_features_come_out_of_fold_too():
    students = [student(f"s{i}", [i, i + 6] * 4, [1, 0] * 4) for i in range(6)]
    names = feature_names(config().context)
    x, _ = out_of_fold_rows(config(), students, folds=3)
    for name in ("pair_sum", "pair_max", "pair_min", "transfer_logit"):
        assert (x[:, names.index(name)] == 0).all(), name  # no one else answered these items
    x_all, _ = feature_rows(with_tables(config(), students), students)
    assert (x_all[:, names.index("transfer_logit")] != 0).all() and (x_all[:, names.index("pair_sum")] != 0).any()


P = NUM_ITEMS  # a skill set's padding


def sets_config():
    return build_model("gbdt", num_items=NUM_ITEMS, max_skills=3, **small_options("gbdt")).config


def test_a_skill_set_answer_updates_each_of_its_skills_and_the_totals_once():
    model = with_tables(sets_config(), [student("a", [[3, 5, P], [5, P, P], [1, P, P]], [1, 0, 1])])
    state = model.initial_state(1)
    for skills, right in (([3, 5, P], 1), ([P, 5, P], 0)):  # padding anywhere in a set
        state = model._update(state, torch.tensor([skills]), torch.tensor([right]))
    answers, rights = state["items"][0, 0], state["items"][0, 1]
    assert (answers[3], answers[5], rights[3], rights[5], answers.sum()) == (
        1,
        2,
        1,
        1,
        3,
    )  # every skill as if answered alone
    assert state["totals"][0, :2].tolist() == [2, 1]  # two answers, one right
    assert state["tokens"][0, -2:].tolist() == [3 * 2 + 1, 5 * 2 + 0]  # a set's token: its smallest skill
    names = feature_names(model.config.context, sets=True)
    both, three, five = (model.features(state, torch.tensor([[q]]))[0, 0] for q in ([5, P, 3], [3, P, P], [5, P, P]))
    x = dict(zip(names, both.tolist()))
    assert (x["item"], x["skills"], x["item_answers"], x["item_right"], x["answers"]) == (3, 2, 1.5, 1, 2)
    torch.testing.assert_close(
        both[1:-1], (three[1:-1] + five[1:-1]) / 2
    )  # every other column: the mean of its skills'
    single = model.features(state, torch.tensor([[5]]))[0, 0]  # one item: a set of one
    assert torch.equal(single, five) and single[-1] == 1


def test_the_tables_count_every_skill_of_an_answered_set():
    students = [student("a", [[3, P, P], [3, 5, P]], [1, 0]), student("b", [[5, 3, P]], [1])]
    model = with_tables(sets_config(), students)
    assert model.item_counts.tolist()[0][3:6] == [3, 0, 2] and model.item_counts.tolist()[1][3:6] == [2, 0, 1]
    answers, right, inputs, items, labels = transfer_statistics(GBDT(sets_config()), students)
    assert items.tolist() == [3, 5] and labels.tolist() == [0, 0]  # a's second answer, once per skill
    assert (answers[3, 2, 3], answers[3, 2, 5], right[3, 2, 3], right[3, 2, 5]) == (
        1,
        1,
        0,
        0,
    ) and answers.sum() == 2 * NUM_ITEMS
    keys, counts, _ = context_counts(sets_config(), students)[0]
    assert counts.sum() == 5  # ctx1 keys of every (answer, skill): 1 + 2 + 2
