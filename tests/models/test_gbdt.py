"""gbdt: its torch trees are LightGBM's trees, its context counts are the training students' own."""

import lightgbm
import numpy as np
import torch

from stream_kt.data.vocab import EncodedSequence
from stream_kt.models import build_model
from stream_kt.models.gbdt import GBDT, feature_names, context_counts, out_of_fold_rows, with_tables, with_trees
from tests.models.conftest import NUM_ITEMS, learnable_students, small_options


def student(name, items, correct):
    return EncodedSequence(name, np.array(items), np.array(correct))


def config():
    return build_model("gbdt", num_items=NUM_ITEMS, **small_options("gbdt")).config


def test_unfitted_predicts_one_half():
    model = GBDT(config())
    out = model.step(model.initial_state(2), torch.tensor([1, 2]), torch.tensor([1, 0]))
    assert torch.equal(out.p_correct, torch.full((2,), 0.5)) and torch.equal(out.mastery, torch.full((2, NUM_ITEMS), 0.5))


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


def test_training_rows_never_count_their_own_student():
    """Each student answers a pair of items no one else does: out of fold, that context is unseen."""
    students = [student(f"s{i}", [i, i + 6] * 4, [1, 0] * 4) for i in range(6)]
    x, y = out_of_fold_rows(config(), students, folds=3)
    assert len(y) == 6 * 7
    assert (x[:, feature_names(config().context).index("ctx1_count")] == 0).all()
    # with every student's counts (the validation and held-out students' tables), the same contexts are seen
    x_all, _ = with_tables(config(), students).feature_rows(students)
    assert (x_all[:, feature_names(config().context).index("ctx1_count")] > 0).all()


def test_torch_trees_reproduce_lightgbm():
    tabled = with_tables(config(), learnable_students(100, 30, 0))
    x, y = tabled.feature_rows(learnable_students(100, 30, 1))
    booster = lightgbm.train({"objective": "binary", "num_leaves": 15, "min_data_in_leaf": 5, "verbose": -1}, lightgbm.Dataset(x, y), 40)
    model = with_trees(tabled, booster.dump_model())
    assert model.config.num_trees == 40 and model.config.tree_depth > 2
    np.testing.assert_allclose(model.trees(torch.from_numpy(x)).numpy(), booster.predict(x, raw_score=True), atol=1e-4)


def test_fit_learns_and_stops_on_validation():
    model, metrics = GBDT(config()).fit(learnable_students(240, 40, 0), learnable_students(60, 40, 1), progress=False)
    assert 1 <= metrics["best_epoch"] <= 30 and len(metrics["history"]) >= metrics["best_epoch"]
    assert metrics["valid_auc"] > 0.7  # the answers follow ability, difficulty and the previous answer
    assert model.config.num_trees == metrics["best_epoch"]
