"""Fitting the ``gbdt`` model: count tables, transfer features and LightGBM trees.

Training rows get their context rates from the other folds of training students (out
of fold), so a row never sees counts that include its own answer; the validation and
held-out students get the tables of all training students, which the model keeps.
The trees are early-stopped on the validation students' AUC (or grown to a fixed
count for a refit) and then become tensors of the model (``with_trees``): LightGBM is
needed here only, never to serve.

With skill sets (``max_skills`` > 1) every count (the items' training rates, the context
tables, the pair counts) and every row of the transfer regression is of an (answer,
skill) pair: an answer on a set counts once for each of its skills.  The trees are
fitted on one row per answer, the set's features (``GBDT.features``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace

import numpy as np
import torch

from stream_kt.data.batches import Batch, make_batch
from stream_kt.data.vocab import EncodedSequence
from stream_kt.errors import ConfigError, DataError
from stream_kt.models.base import State
from stream_kt.models.gbdt import GBDT, GBDTConfig, feature_names
from stream_kt.training.fitters import register_fitter


def fit_gbdt(
    model: GBDT,
    train: Sequence[EncodedSequence],
    valid: Sequence[EncodedSequence],
    seed: int = 0,
    progress: bool = True,
    rounds: int | None = None,
) -> tuple[GBDT, dict]:
    """A fitted copy of ``model``: tables from ``train``, trees early-stopped on ``valid``.

    ``rounds``: boost exactly this many trees instead, with no validation (a refit on
    training plus validation students; ``valid`` is not used).
    """
    try:
        import lightgbm
    except ImportError:
        raise ConfigError("gbdt needs LightGBM to fit: pip install 'stream-kt[gbdt]'") from None
    config = model.config
    x_train, y_train = out_of_fold_rows(config, train, config.folds, progress)
    tabled = with_tables(config, train, progress)
    params = {
        "objective": "binary",
        "metric": ["auc", "binary_logloss"],
        "learning_rate": config.learning_rate,
        "num_leaves": config.num_leaves,
        "max_depth": config.max_depth,
        "min_data_in_leaf": config.min_data_in_leaf,
        "feature_fraction": 0.8,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "seed": seed,
        "num_threads": torch.get_num_threads(),
        "verbose": -1,
    }
    history: list[dict] = []
    train_set = lightgbm.Dataset(
        x_train,
        y_train,
        feature_name=feature_names(config.context, config.transfer, config.max_skills > 1),
        free_raw_data=False,
    )
    if rounds is not None:
        booster = lightgbm.train(
            params,
            train_set,
            rounds,
            valid_sets=[train_set],
            valid_names=["train"],
            callbacks=[_progress(rounds, history, progress)],
        )
        return with_trees(tabled, booster.dump_model()), {
            "best_epoch": rounds,
            "history": history,
            "train_rows": len(y_train),
        }
    x_valid, y_valid = feature_rows(tabled, valid)
    if len(np.unique(y_valid)) < 2:
        raise DataError("gbdt: the validation students need both right and wrong answers to stop on their AUC")
    valid_set = lightgbm.Dataset(x_valid, y_valid, reference=train_set)
    booster = lightgbm.train(
        params,
        train_set,
        config.max_rounds,
        valid_sets=[valid_set, train_set],
        valid_names=["valid", "train"],
        callbacks=[
            lightgbm.early_stopping(config.patience, first_metric_only=True, verbose=False),
            _progress(config.max_rounds, history, progress),
        ],
    )
    fitted = with_trees(tabled, booster.dump_model(num_iteration=booster.best_iteration))
    metrics = {
        "best_epoch": booster.best_iteration,
        "valid_auc": float(booster.best_score["valid"]["auc"]),
        "history": history,
        "train_rows": len(y_train),
    }
    return fitted, metrics


@torch.no_grad()
def feature_rows(
    model: GBDT, sequences: Sequence[EncodedSequence], batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of every scored answer (each student's second on), students in order."""
    xs, ys = [], []
    for start in range(0, len(sequences), batch_size):
        rows = [(s.items, s.correct) for s in sequences[start : start + batch_size] if len(s) >= 2]
        if not rows:
            continue
        batch = make_batch(rows)
        x = model.feature_walk(batch).transpose(0, 1)  # (B, T, F)
        xs.append(x[batch.next_mask].numpy())
        ys.append(batch.next_correct[batch.next_mask].numpy())
    if not xs:
        return np.zeros(
            (0, len(feature_names(model.config.context, model.config.transfer, model.config.max_skills > 1))),
            np.float32,
        ), np.zeros(0, np.float32)
    return np.concatenate(xs), np.concatenate(ys)


def out_of_fold_rows(
    config: GBDTConfig, train: Sequence[EncodedSequence], folds: int, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Feature rows of ``train`` whose context counts come from the other folds of students only.

    Counts that included a row's own student would hold its label (and that student's
    later answers): the trees would learn to trust them more than they deserve on new
    students.
    """
    folds = max(2, min(folds, len(train)))
    x_parts, y_parts = [], []
    for fold in range(folds):
        rest = [s for i, s in enumerate(train) if i % folds != fold]
        mine = [s for i, s in enumerate(train) if i % folds == fold]
        x, y = feature_rows(with_tables(config, rest, progress), mine)
        x_parts.append(x)
        y_parts.append(y)
    return np.concatenate(x_parts), np.concatenate(y_parts)


def states_before(
    model: GBDT, sequences: Sequence[EncodedSequence], batch_size: int = 256
) -> Iterator[tuple[Batch, int, State]]:
    """(batch, t, state) for every position t of ``sequences`` in batches: each row's state before its answer at t."""
    for start in range(0, len(sequences), batch_size):
        rows = [(s.items, s.correct) for s in sequences[start : start + batch_size] if len(s) >= 1]
        if not rows:
            continue
        batch = make_batch(rows)
        state = model.initial_state(batch.items.shape[0])
        for t in range(batch.items.shape[1]):
            yield batch, t, state
            state = model._advance(state, batch, t)


def answered_skills(batch: Batch, t: int, num_items: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(skills (B, K), taken (B, K)): the items answered at ``t`` as sets (one item: a set of one), padding pointed at
    item 0, and which are real skills of real answers."""
    skills = batch.items[:, t].view(batch.items.shape[0], -1)
    taken = (skills < num_items) & batch.mask[:, t : t + 1]
    return skills.masked_fill(skills >= num_items, 0), taken


def context_counts(
    config: GBDTConfig, sequences: Sequence[EncodedSequence]
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(sorted keys, answers, right) of each context table over ``sequences``, keys as ``context_keys`` makes them
    (one per answered skill)."""
    model = GBDT(config)
    keys: list[list[np.ndarray]] = [[] for _ in range(config.context + 1)]
    rights: list[np.ndarray] = []
    for batch, t, state in states_before(model, sequences):
        skills, taken = answered_skills(batch, t, config.num_items)
        for k, key in enumerate(model.context_keys(state, skills)):
            keys[k].append(key[taken].numpy())
        rights.append(batch.correct[:, t : t + 1].expand_as(skills)[taken].numpy())
    right = np.concatenate(rights) if rights else np.zeros(0, np.int64)
    out = []
    for k in range(config.context + 1):
        flat = np.concatenate(keys[k]) if keys[k] else np.zeros(0, np.int64)
        unique, inverse = np.unique(flat, return_inverse=True)
        out.append(
            (
                unique,
                np.bincount(inverse, minlength=len(unique)).astype(np.float32),
                np.bincount(inverse, weights=right, minlength=len(unique)).astype(np.float32),
            )
        )
    return out


def transfer_statistics(
    model: GBDT, sequences: Sequence[EncodedSequence]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What the transfer features are fitted on: pair counts and regression rows of ``sequences``.

    Returns (answers, right), each (V, 3, V): answers on q (last axis) by students whose
    last answer on item j was none / wrong / right (middle axis), and how many were right;
    then the regression rows: inputs (N, 4V), items (N,) and answers (N,) of every answer
    after a student's first (by step, then student; a skill set's answer once per skill).
    """
    v = model.config.num_items
    answers, right = torch.zeros(3, v, v), torch.zeros(3, v, v)
    inputs, items, labels = [], [], []
    for batch, t, state in states_before(model, sequences):
        real = batch.mask[:, t]
        if t == 0 or not real.any():
            continue
        skills, taken = answered_skills(batch, t, v)
        q = (
            (torch.nn.functional.one_hot(skills, v) * taken.unsqueeze(-1)).sum(1)[real].to(torch.float32)
        )  # (b, V): the answered skills
        y = batch.correct[real, t].to(torch.float32)
        last = torch.nn.functional.one_hot(model.last_answers(state)[real], 3).to(torch.float32)  # (b, V_j, 3)
        answers += torch.einsum("bjr,bq->rjq", last, q)
        right += torch.einsum("bjr,bq->rjq", last, q * y.unsqueeze(1))
        row, slot = taken.nonzero(as_tuple=True)  # by student, then skill
        inputs.append(model.transfer_inputs(state)[row].numpy())
        items.append(skills[row, slot].numpy())
        labels.append(batch.correct[row, t].to(torch.float32).numpy())
    stack = lambda parts, shape, dtype: np.concatenate(parts) if parts else np.zeros(shape, dtype)  # noqa: E731
    return (
        answers.permute(1, 0, 2).numpy(),
        right.permute(1, 0, 2).numpy(),
        stack(inputs, (0, 4 * v), np.float32),
        stack(items, (0,), np.int64),
        stack(labels, (0,), np.float32),
    )


def fit_transfer(
    config: GBDTConfig, inputs: np.ndarray, items: np.ndarray, labels: np.ndarray, progress: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight (V, 4V), bias (V,)) of the logistic regression "right on item q" over ``inputs``, one weight row per q.

    Full-batch Adam on the mean log loss plus ``transfer_l2`` times the squared weights;
    rows are grouped by item, so each step costs one pass over the inputs.
    """
    from stream_kt.progress import progress_bar

    v = config.num_items
    x, y, q = torch.from_numpy(inputs), torch.from_numpy(labels), torch.from_numpy(items)
    groups = [(i, x[q == i], y[q == i]) for i in torch.unique(q).tolist()]
    weight = torch.zeros(v, x.shape[1], requires_grad=True)
    bias = torch.zeros(v, requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=0.05)
    loss_fn = torch.nn.functional.binary_cross_entropy_with_logits
    with torch.enable_grad():  # callers may hold no_grad
        for _ in progress_bar(
            range(config.transfer_steps if len(y) else 0),
            desc="transfer regression",
            unit="step",
            disable=not progress,
            leave=False,
        ):
            optimizer.zero_grad()
            loss = sum(loss_fn(xs @ weight[i] + bias[i], ys, reduction="sum") for i, xs, ys in groups) / len(y)
            (loss + config.transfer_l2 * weight.pow(2).sum()).backward()
            optimizer.step()
    return weight.detach(), bias.detach()


def with_tables(config: GBDTConfig, sequences: Sequence[EncodedSequence], progress: bool = False) -> GBDT:
    """A tree-less model whose count tables (and transfer features) come from ``sequences``."""
    tables = context_counts(config, sequences)
    model = GBDT(
        replace(config, num_trees=0, tree_nodes=1, tree_depth=0, table_rows=tuple(max(1, len(k)) for k, _, _ in tables))
    )
    items = (
        np.concatenate([s.items.reshape(len(s.items), -1) for s in sequences])
        if sequences
        else np.zeros((0, 1), np.int64)
    )  # (N, K)
    right = np.concatenate([s.correct for s in sequences]).astype(np.float64) if sequences else np.zeros(0)
    v = config.num_items
    taken = items < v  # a set's skills, each counted
    skills, skill_right = items[taken], np.broadcast_to(right[:, None], items.shape)[taken]
    with torch.no_grad():
        model.item_counts.copy_(
            torch.tensor(
                np.stack([np.bincount(skills, minlength=v), np.bincount(skills, weights=skill_right, minlength=v)]),
                dtype=torch.float32,
            )
        )
        model.base_rate.fill_(float(right.mean()) if len(right) else 0.5)
        for k, (keys, answers, rights) in enumerate(tables):
            if len(keys):
                getattr(model, f"keys{k}").copy_(torch.from_numpy(keys.astype(np.int64)))
                getattr(model, f"counts{k}").copy_(torch.from_numpy(np.stack([answers, rights])))
        if config.transfer:
            answers, rights, inputs, items, labels = transfer_statistics(model, sequences)
            base = model._item_rate().view(1, 1, v)
            s = config.pair_smoothing
            rate = (torch.from_numpy(rights) + s * base) / (torch.from_numpy(answers) + s)
            shift = torch.logit(rate) - torch.logit(base)
            shift[:, 0] = 0.0  # an unanswered item shifts nothing
            model.pair_shift.copy_(shift)
            weight, bias = fit_transfer(config, inputs, items, labels, progress)
            model.transfer_weight.copy_(weight)
            model.transfer_bias.copy_(bias)
    return model


def with_trees(tabled: GBDT, dump: dict) -> GBDT:
    """``tabled`` plus the trees of a LightGBM ``dump_model()``, as padded node tensors.

    Nodes: a tree's split nodes in depth-first order, then its leaves; a leaf's children
    are itself.  LightGBM sends ``x <= threshold`` left; the threshold becomes the
    largest float32 not above it, so float32 features split exactly as LightGBM's would.
    """
    trees = []
    for info in dump["tree_info"]:
        nodes: list[list] = []  # [feature, threshold, left, right, value]

        def add(node: dict) -> int:
            index = len(nodes)
            nodes.append([0, 0.0, index, index, 0.0])
            if "leaf_value" in node or "split_index" not in node:
                nodes[index][4] = float(node.get("leaf_value", 0.0))
                return index
            if node.get("decision_type", "<=") != "<=" or node.get("missing_type", "None") not in ("None", None):
                raise ConfigError(
                    f"gbdt: unsupported LightGBM split {node.get('decision_type')!r} "
                    f"/ missing {node.get('missing_type')!r}"
                )
            threshold = np.float32(node["threshold"])
            if float(threshold) > node["threshold"]:
                threshold = np.nextafter(threshold, np.float32(-np.inf))
            nodes[index][:2] = [int(node["split_feature"]), float(threshold)]
            nodes[index][2] = add(node["left_child"])
            nodes[index][3] = add(node["right_child"])
            return index

        add(info["tree_structure"])
        trees.append(nodes)

    def depth(nodes: list[list], i: int = 0) -> int:
        return 0 if nodes[i][2] == i else 1 + max(depth(nodes, nodes[i][2]), depth(nodes, nodes[i][3]))

    width = max((len(n) for n in trees), default=1)
    config = replace(
        tabled.config, num_trees=len(trees), tree_nodes=width, tree_depth=max((depth(n) for n in trees), default=0)
    )
    fitted = GBDT(config)
    state = {
        k: v for k, v in tabled.state_dict().items() if k not in ("feature", "threshold", "left", "right", "value")
    }
    table = np.zeros((5, len(trees), width))
    for t, nodes in enumerate(trees):
        table[2:4, t] = np.arange(width)  # padding nodes are leaves of value 0, never reached
        table[:, t, : len(nodes)] = np.asarray(nodes, dtype=np.float64).T
    state.update(
        feature=torch.tensor(table[0], dtype=torch.long),
        threshold=torch.tensor(table[1], dtype=torch.float32),
        left=torch.tensor(table[2], dtype=torch.long),
        right=torch.tensor(table[3], dtype=torch.long),
        value=torch.tensor(table[4], dtype=torch.float32),
    )
    fitted.load_state_dict(state)
    return fitted.eval()


class _progress:
    """LightGBM callback: a progress bar over boosting rounds, and the validation AUC per round."""

    order = 30

    def __init__(self, rounds: int, history: list[dict], enabled: bool) -> None:
        from stream_kt.progress import progress_bar

        self.bar = progress_bar(total=rounds, desc="boosting", unit="tree", disable=not enabled, leave=False)
        self.history = history

    def __call__(self, env) -> None:
        scores = {(data, metric): float(score) for data, metric, score, _ in env.evaluation_result_list}
        row = {"epoch": env.iteration + 1, "train_loss": scores[("train", "binary_logloss")]}
        if ("valid", "auc") in scores:  # early stopping (a refit has no validation students)
            row.update(valid_logloss=scores[("valid", "binary_logloss")], valid_auc=scores[("valid", "auc")])
            self.bar.set_postfix(valid_auc=f"{row['valid_auc']:.4f}")
        self.history.append(row)
        self.bar.update(1)


register_fitter(GBDT, fit_gbdt)
