"""Gradient-boosted trees over a student's history (``gbdt``): hand-made features, learned trees.

The features of "student answers item q next" come from the student's earlier answers
only (the state) and from answer counts of the *training* students:

* context tables: how often the training students answered q right after the same last
  1, 2, ... ``context`` (item, correct) interactions, and after the same last three
  answers on q itself; each rate is smoothed towards the next shorter context's rate;
* the student: answers and right answers so far, overall and on q, steps since q was
  last answered, the rate over the last 5 and 10 answers, the mean and a decaying sum
  of (right - item's training rate), and an Elo-style ability, overall and per item;
* q and the last two interactions themselves;
* transfer from the other items (``transfer``, on by default): for each item j the student
  has answered, how the training students' rate on q moved after their last answer on j
  was right or wrong (a log-odds shift, smoothed towards q's rate); the shifts are
  summed, averaged, recency-weighted and their extremes taken.  And the logit of a
  logistic regression of "right on q" over the student's last answer and right / wrong
  counts on every item, fitted on the training students (a per-item PFA with transfer).

Trees: LightGBM (``pip install stream-kt[gbdt]``), early-stopped on the validation
students' AUC.  Training rows get their context rates from the other folds of training
students (out of fold), so a row never sees counts that include its own answer; the
validation and held-out students get the tables of all training students, which the
model keeps.  LightGBM is needed to fit only: the fitted trees and tables are tensors
of this module, and prediction is torch (every backend, the stream, parity).

State per student (float32, fixed shape): the last ``context`` interactions as tokens, the
last ten answers, per-item counters ``(5, V)`` and totals.  ``forward`` runs the same
update as ``step`` over the sequence, so offline and streamed predictions agree by
construction; each prediction reads only answers before it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterator, Sequence

import numpy as np
import torch

from stream_kt.data.batches import Batch, make_batch
from stream_kt.data.vocab import EncodedSequence
from stream_kt.errors import ConfigError, DataError
from stream_kt.models import register
from stream_kt.models.base import KTModel, State, StepOutput

HEAD = ("item", "prev_item", "prev_correct", "prev2_item", "prev2_correct", "item_rate")
TAIL = (
    "own_rate", "item_answers", "item_right", "since_item", "answers", "accuracy", "last5", "last10",
    "residual", "residual_decay", "ability", "item_ability", "elo_p",
)  # fmt: skip


TRANSFER = ("pair_sum", "pair_mean", "pair_recent", "pair_recent_slow", "pair_recent_mean", "pair_max", "pair_min", "transfer_logit")


def feature_names(context: int, transfer: bool = True) -> list[str]:
    """The columns of ``GBDT.features``, in order."""
    return [*HEAD, *(f"ctx{k}_{what}" for k in range(1, context + 1) for what in ("rate", "count")), *TAIL, *(TRANSFER if transfer else ())]

RECENT = 10  # answers kept for last5 / last10
ITEM_ROWS = ("answers", "right", "last_pos", "own", "ability")  # per-item counters, (5, V)
TOTALS = ("answers", "right", "ability", "residual", "residual_decay")
HISTORY_CAP = 5  # own-history context: answers on the item counted up to this


@dataclass(frozen=True)
class GBDTConfig:
    num_items: int
    # fitting
    num_leaves: int = 31
    max_depth: int = 8  # bounds the streamed cost: every prediction walks each tree this deep at most
    learning_rate: float = 0.1
    max_rounds: int = 1000
    patience: int = 50  # rounds without a better validation AUC
    min_data_in_leaf: int = 100
    folds: int = 5  # out-of-fold context rates for the training rows
    smoothing: float = 10.0  # pseudo-answers pulling a context's rate towards its shorter context
    context: int = 5  # longest context: the last this many interactions
    transfer: bool = True  # the transfer features (checkpoints from before them load as False)
    pair_smoothing: float = 20.0  # pseudo-answers pulling a pair's rate towards the item's
    transfer_l2: float = 1e-5  # L2 penalty of the transfer regression
    transfer_steps: int = 300  # its full-batch Adam steps
    # shapes of the fitted tensors (set by fit; an unfitted model predicts 0.5)
    num_trees: int = 0
    tree_nodes: int = 1
    tree_depth: int = 0
    table_rows: tuple = ()  # keys in the ctx1 .. ctx<context> and own-history tables (default: 1 each)


@register
class GBDT(KTModel):
    name = "gbdt"
    Config = GBDTConfig

    def __init__(self, config: GBDTConfig) -> None:
        super().__init__(config)
        v = config.num_items
        if config.context < 2:
            raise ConfigError("gbdt: context must be at least 2 (the features read the last two interactions)")
        self.none_token = 2 * v
        self.key_base = 2 * v + 2  # a token (or none) is one digit of a context key
        self.key_modulus = 2**63 // self.key_base - 1  # keys are hashed below it, so key * base fits int64
        rows = tuple(config.table_rows) or (1,) * (config.context + 1)
        if len(rows) != config.context + 1:
            raise ConfigError(f"gbdt: table_rows needs {config.context + 1} entries, got {len(rows)}")
        self.register_buffer("item_counts", torch.zeros(2, v))  # training answers, right answers per item
        self.register_buffer("base_rate", torch.tensor(0.5))
        for k, n in enumerate(rows):  # sorted keys; counts (answers, right)
            self.register_buffer(f"keys{k}", torch.full((int(n),), -1, dtype=torch.long))
            self.register_buffer(f"counts{k}", torch.zeros(2, int(n)))
        t, m = config.num_trees, config.tree_nodes
        self.register_buffer("feature", torch.zeros(t, m, dtype=torch.long))
        self.register_buffer("threshold", torch.zeros(t, m))
        self.register_buffer("left", torch.zeros(t, m, dtype=torch.long))
        self.register_buffer("right", torch.zeros(t, m, dtype=torch.long))
        self.register_buffer("value", torch.zeros(t, m))  # LightGBM folds its initial score into the first tree's leaves
        if config.transfer:
            self.register_buffer("pair_shift", torch.zeros(v, 3, v))  # [j, last answer on j (0 none, 1 wrong, 2 right), q]
            self.register_buffer("transfer_weight", torch.zeros(v, 4 * v))  # [q, transfer_inputs]
            self.register_buffer("transfer_bias", torch.zeros(v))

    @classmethod
    def config_from(cls, saved: dict) -> GBDTConfig:
        return GBDTConfig(**{"transfer": False, **saved})  # saved before the transfer features existed

    def config_dict(self) -> dict:
        config = super().config_dict()
        if not self.config.transfer:  # as such checkpoints were hashed
            for key in ("transfer", "pair_smoothing", "transfer_l2", "transfer_steps"):
                config.pop(key)
        return config

    # ---- state -------------------------------------------------------------------
    def initial_state(self, batch_size: int) -> State:
        v = self.config.num_items
        items = torch.zeros(batch_size, len(ITEM_ROWS), v)
        return {
            "tokens": torch.full((batch_size, self.config.context), float(self.none_token)),  # item * 2 + correct, newest last
            "recent": torch.full((batch_size, RECENT), -1.0),  # last ten answers, newest last; -1: none
            "items": items,
            "totals": torch.zeros(batch_size, len(TOTALS)),
        }

    def _item_rate(self) -> torch.Tensor:
        s = self.config.smoothing
        return (self.item_counts[1] + s * self.base_rate) / (self.item_counts[0] + s)  # (V,)

    def _update(self, state: State, items: torch.Tensor, correct: torch.Tensor) -> State:
        """The state after each row's student answers ``items`` (B,) with ``correct`` (B,)."""
        right = correct.to(torch.float32)
        at = items.view(-1, 1)
        per_item = state["items"]
        answers_q = per_item[:, 0].gather(1, at).squeeze(1)
        totals = state["totals"]
        answers = totals[:, 0]
        rate = self._item_rate()[items]
        expected = torch.sigmoid(totals[:, 2] + per_item[:, 4].gather(1, at).squeeze(1) + torch.logit(rate))
        surprise = right - expected
        own = per_item[:, 3].gather(1, at).squeeze(1)
        changes = torch.stack(
            [
                answers_q + 1,
                per_item[:, 1].gather(1, at).squeeze(1) + right,
                answers,  # position of this answer
                torch.remainder(own * 3 + 1 + right, 27),  # last three answers on the item, base 3 (0: none)
                per_item[:, 4].gather(1, at).squeeze(1) + 0.4 / (1 + 0.2 * answers_q) * surprise,
            ],
            1,
        )  # (B, 5)
        new_items = per_item.scatter(2, at.unsqueeze(1).expand(-1, len(ITEM_ROWS), 1), changes.unsqueeze(2))
        new_totals = torch.stack(
            [
                answers + 1,
                totals[:, 1] + right,
                totals[:, 2] + 0.4 / (1 + 0.05 * answers) * surprise,
                totals[:, 3] + right - rate,
                0.9 * totals[:, 4] + right - rate,
            ],
            1,
        )
        token = (items * 2 + correct).to(torch.float32).view(-1, 1)
        return {
            "tokens": torch.cat([state["tokens"][:, 1:], token], 1),
            "recent": torch.cat([state["recent"][:, 1:], right.view(-1, 1)], 1),
            "items": new_items,
            "totals": new_totals,
        }

    def _advance(self, state: State, batch: Batch, t: int) -> State:
        """``state`` after position ``t`` of ``batch``: updated where it is a real interaction, kept at padding."""
        updated = self._update(state, batch.items[:, t], batch.correct[:, t])
        real = batch.mask[:, t]
        return {k: torch.where(real.view(-1, *[1] * (v.dim() - 1)), updated[k], v) for k, v in state.items()}

    # ---- features ----------------------------------------------------------------
    @staticmethod
    def last_answers(state: State) -> torch.Tensor:
        """(B, V) the last answer on each item: 0 none, 1 wrong, 2 right (the newest digit of ``own``)."""
        return torch.remainder(state["items"][:, 3], 3).to(torch.long)

    @staticmethod
    def transfer_inputs(state: State) -> torch.Tensor:
        """(B, 4V) the regression's inputs: last answer right, last answer wrong, log1p right, log1p wrong, per item."""
        last = GBDT.last_answers(state)
        answers, right = state["items"][:, 0], state["items"][:, 1]
        return torch.cat([(last == 2).to(torch.float32), (last == 1).to(torch.float32), torch.log1p(right), torch.log1p(answers - right)], 1)

    def transfer_features(self, state: State, queries: torch.Tensor) -> list[torch.Tensor]:
        """The ``TRANSFER`` columns, each (B, Q)."""
        v = self.config.num_items
        last = self.last_answers(state)  # (B, V)
        shifts = self.pair_shift[torch.arange(v, device=last.device), last]  # (B, V_j, V_q); 0 where j is unanswered
        shift = shifts.gather(2, queries.unsqueeze(1).expand(-1, v, -1))  # (B, V_j, Q)
        seen = (last > 0).to(torch.float32)
        gap = state["totals"][:, 0:1] - 1 - state["items"][:, 2]  # answers since the last one on j
        fast, slow = seen * 0.9**gap, seen * 0.97**gap
        total = shift.sum(1)
        recent, recent_slow = ((w.unsqueeze(2) * shift).sum(1) for w in (fast, slow))
        logit = self.transfer_inputs(state) @ self.transfer_weight.T + self.transfer_bias  # (B, V_q)
        return [
            total,
            total / seen.sum(1, keepdim=True).clamp(min=1),
            recent,
            recent_slow,
            recent_slow / slow.sum(1, keepdim=True).clamp(min=1e-6),
            shift.amax(1),
            shift.amin(1),
            logit.gather(1, queries),
        ]

    def _lookup(self, k: int, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(answers, right) of the training students in context ``keys`` of table ``k`` (0 where unseen)."""
        table = getattr(self, f"keys{k}")
        at = torch.searchsorted(table, keys).clamp(max=table.shape[0] - 1)
        found = (table[at] == keys).to(torch.float32)
        counts = getattr(self, f"counts{k}")
        return counts[0][at] * found, counts[1][at] * found

    def context_keys(self, state: State, queries: torch.Tensor) -> list[torch.Tensor]:
        """int64 keys (B, Q) of the context tables (last 1 .. ``context`` interactions, then own history) for query items (B, Q).

        A key is the query followed by the tokens, newest first, as digits of base
        ``2V + 2``, hashed modulo ``key_modulus`` (exact while it fits; beyond, two
        contexts may rarely share counts).
        """
        tokens = state["tokens"].to(torch.long)  # (B, C) newest last
        keys, key = [], queries
        for k in range(1, self.config.context + 1):
            key = torch.remainder(key * self.key_base + tokens[:, -k : tokens.shape[1] - k + 1] + 1, self.key_modulus)
            keys.append(key)
        answers_q = state["items"][:, 0].gather(1, queries).clamp(max=HISTORY_CAP).to(torch.long)
        own = state["items"][:, 3].gather(1, queries).to(torch.long)
        return [*keys, (queries * (HISTORY_CAP + 1) + answers_q) * 27 + own]

    def features(self, state: State, queries: torch.Tensor) -> torch.Tensor:
        """(B, Q, F) features of each row's student answering each of ``queries`` (B, Q) next."""
        s = self.config.smoothing
        item_rate = self._item_rate()[queries]
        keys = self.context_keys(state, queries)
        rates, counts = [], []
        shorter = item_rate
        context = self.config.context
        for k in range(context):  # each context's rate is smoothed towards the next shorter one's
            n, c = self._lookup(k, keys[k])
            shorter = (c + s * shorter) / (n + s)
            rates.append(shorter)
            counts.append(n)
        n, c = self._lookup(context, keys[context])
        own_rate = (c + s * item_rate) / (n + s)
        tokens = state["tokens"]
        none = tokens == self.none_token
        prev_item = torch.where(none, -1.0, torch.div(tokens, 2, rounding_mode="floor"))  # (B, C)
        prev_correct = torch.where(none, -1.0, torch.remainder(tokens, 2))
        per_item = state["items"]
        answers_q = per_item[:, 0].gather(1, queries)
        item_ability = per_item[:, 4].gather(1, queries)
        totals = state["totals"]
        answers = totals[:, 0:1]
        recent = state["recent"]

        def recent_rate(n: int) -> torch.Tensor:
            window = recent[:, -n:]
            seen = (window >= 0).to(torch.float32).sum(1, keepdim=True)
            return torch.where(seen > 0, window.clamp(min=0).sum(1, keepdim=True) / seen.clamp(min=1), -1.0)

        some = answers > 0
        row = lambda x: x.expand_as(item_rate)  # noqa: E731  (B, 1) -> (B, Q)
        columns = [
            queries.to(torch.float32),
            row(prev_item[:, -1:]),
            row(prev_correct[:, -1:]),
            row(prev_item[:, -2:-1]),
            row(prev_correct[:, -2:-1]),
            item_rate,
            *(column for pair in zip(rates, counts) for column in pair),
            own_rate,
            answers_q,
            per_item[:, 1].gather(1, queries),
            torch.where(answers_q > 0, answers - per_item[:, 2].gather(1, queries), -1.0),
            row(answers),
            row(torch.where(some, totals[:, 1:2] / answers.clamp(min=1), -1.0)),
            row(recent_rate(5)),
            row(recent_rate(RECENT)),
            row(torch.where(some, totals[:, 3:4] / answers.clamp(min=1), 0.0)),
            row(totals[:, 4:5]),
            row(totals[:, 2:3]),
            item_ability,
            torch.sigmoid(totals[:, 2:3] + item_ability + torch.logit(item_rate)),
        ]
        if self.config.transfer:
            columns += self.transfer_features(state, queries)
        return torch.stack(columns, -1)

    # ---- trees -------------------------------------------------------------------
    def trees(self, x: torch.Tensor) -> torch.Tensor:
        """Sum of the trees' leaf values for feature rows ``x`` (..., F): logits (...); no trees: 0."""
        shape = x.shape[:-1]
        rows = x.reshape(-1, x.shape[-1])
        if self.config.num_trees == 0:
            return x.new_zeros(shape)
        offsets = torch.arange(self.config.num_trees, device=x.device) * self.config.tree_nodes  # (T,)
        node = torch.zeros(rows.shape[0], self.config.num_trees, dtype=torch.long, device=x.device)
        feature, threshold = self.feature.reshape(-1), self.threshold.reshape(-1)
        left, right = self.left.reshape(-1), self.right.reshape(-1)
        for _ in range(self.config.tree_depth):  # a leaf points to itself, so extra rounds keep it
            at = node + offsets
            goes_left = rows.gather(1, feature[at]) <= threshold[at]
            node = torch.where(goes_left, left[at], right[at])
        return self.value.reshape(-1)[node + offsets].sum(1).reshape(shape)

    # ---- the KTModel interface ---------------------------------------------------
    def feature_walk(self, batch: Batch) -> torch.Tensor:
        """(T, B, F) features of each row's next answer after each position (padding leaves the state)."""
        state = self.initial_state(batch.items.shape[0])
        out = []
        for t in range(batch.items.shape[1]):
            state = self._advance(state, batch, t)
            out.append(self.features(state, batch.next_items[:, t : t + 1])[:, 0])
        return torch.stack(out)

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.trees(self.feature_walk(batch)).transpose(0, 1)  # (B, T)

    def step(self, state: State, items: torch.Tensor, correct: torch.Tensor) -> StepOutput:
        p_correct = torch.sigmoid(self.trees(self.features(state, items.view(-1, 1))))[:, 0]
        state = self._update(state, items, correct)
        every = torch.arange(self.config.num_items, device=items.device).expand(items.shape[0], -1)
        mastery = torch.sigmoid(self.trees(self.features(state, every)))
        return StepOutput(p_correct, state, mastery)

    # ---- fitting -----------------------------------------------------------------
    def fit(self, train: Sequence[EncodedSequence], valid: Sequence[EncodedSequence], seed: int = 0, progress: bool = True, rounds: int | None = None) -> tuple["GBDT", dict]:
        """A fitted copy of this model: tables from ``train``, trees early-stopped on ``valid``.

        ``rounds``: boost exactly this many trees instead, with no validation (a refit on
        training plus validation students; ``valid`` is not used).
        """
        try:
            import lightgbm
        except ImportError:
            raise ConfigError("gbdt needs LightGBM to fit: pip install 'stream-kt[gbdt]'") from None
        config = self.config
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
        train_set = lightgbm.Dataset(x_train, y_train, feature_name=feature_names(config.context, config.transfer), free_raw_data=False)
        if rounds is not None:
            booster = lightgbm.train(params, train_set, rounds, valid_sets=[train_set], valid_names=["train"], callbacks=[_progress(rounds, history, progress)])
            return with_trees(tabled, booster.dump_model()), {"best_epoch": rounds, "history": history, "train_rows": len(y_train)}
        x_valid, y_valid = tabled.feature_rows(valid)
        if len(np.unique(y_valid)) < 2:
            raise DataError("gbdt: the validation students need both right and wrong answers to stop on their AUC")
        valid_set = lightgbm.Dataset(x_valid, y_valid, reference=train_set)
        booster = lightgbm.train(
            params,
            train_set,
            config.max_rounds,
            valid_sets=[valid_set, train_set],
            valid_names=["valid", "train"],
            callbacks=[lightgbm.early_stopping(config.patience, first_metric_only=True, verbose=False), _progress(config.max_rounds, history, progress)],
        )
        fitted = with_trees(tabled, booster.dump_model(num_iteration=booster.best_iteration))
        metrics = {"best_epoch": booster.best_iteration, "valid_auc": float(booster.best_score["valid"]["auc"]), "history": history, "train_rows": len(y_train)}
        return fitted, metrics

    @torch.no_grad()
    def feature_rows(self, sequences: Sequence[EncodedSequence], batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """Features and labels of every scored answer (each student's second on), students in order."""
        xs, ys = [], []
        for start in range(0, len(sequences), batch_size):
            rows = [(s.items, s.correct) for s in sequences[start : start + batch_size] if len(s) >= 2]
            if not rows:
                continue
            batch = make_batch(rows)
            x = self.feature_walk(batch).transpose(0, 1)  # (B, T, F)
            xs.append(x[batch.next_mask].numpy())
            ys.append(batch.next_correct[batch.next_mask].numpy())
        if not xs:
            return np.zeros((0, len(feature_names(self.config.context, self.config.transfer))), np.float32), np.zeros(0, np.float32)
        return np.concatenate(xs), np.concatenate(ys)


def out_of_fold_rows(config: GBDTConfig, train: Sequence[EncodedSequence], folds: int, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
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
        x, y = with_tables(config, rest, progress).feature_rows(mine)
        x_parts.append(x)
        y_parts.append(y)
    return np.concatenate(x_parts), np.concatenate(y_parts)


def states_before(model: GBDT, sequences: Sequence[EncodedSequence], batch_size: int = 256) -> Iterator[tuple[Batch, int, State]]:
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


def context_counts(config: GBDTConfig, sequences: Sequence[EncodedSequence]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(sorted keys, answers, right) of each context table over ``sequences``, keys as ``context_keys`` makes them."""
    model = GBDT(config)
    keys: list[list[np.ndarray]] = [[] for _ in range(config.context + 1)]
    rights: list[np.ndarray] = []
    for batch, t, state in states_before(model, sequences):
        real = batch.mask[:, t]
        for k, key in enumerate(model.context_keys(state, batch.items[:, t : t + 1])):
            keys[k].append(key[real, 0].numpy())
        rights.append(batch.correct[real, t].numpy())
    right = np.concatenate(rights) if rights else np.zeros(0, np.int64)
    out = []
    for k in range(config.context + 1):
        flat = np.concatenate(keys[k]) if keys[k] else np.zeros(0, np.int64)
        unique, inverse = np.unique(flat, return_inverse=True)
        out.append((unique, np.bincount(inverse, minlength=len(unique)).astype(np.float32), np.bincount(inverse, weights=right, minlength=len(unique)).astype(np.float32)))
    return out


def transfer_statistics(model: GBDT, sequences: Sequence[EncodedSequence]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What the transfer features are fitted on: pair counts and regression rows of ``sequences``.

    Returns (answers, right), each (V, 3, V): answers on q (last axis) by students whose
    last answer on item j was none / wrong / right (middle axis), and how many were right;
    then the regression rows: inputs (N, 4V), items (N,) and answers (N,) of every answer
    after a student's first (by step, then student).
    """
    v = model.config.num_items
    answers, right = torch.zeros(3, v, v), torch.zeros(3, v, v)
    inputs, items, labels = [], [], []
    for batch, t, state in states_before(model, sequences):
        real = batch.mask[:, t]
        if t == 0 or not real.any():
            continue
        q = torch.nn.functional.one_hot(batch.items[real, t], v).to(torch.float32)  # (b, V)
        y = batch.correct[real, t].to(torch.float32)
        last = torch.nn.functional.one_hot(model.last_answers(state)[real], 3).to(torch.float32)  # (b, V_j, 3)
        answers += torch.einsum("bjr,bq->rjq", last, q)
        right += torch.einsum("bjr,bq->rjq", last, q * y.unsqueeze(1))
        inputs.append(model.transfer_inputs(state)[real].numpy())
        items.append(batch.items[real, t].numpy())
        labels.append(y.numpy())
    stack = lambda parts, shape, dtype: np.concatenate(parts) if parts else np.zeros(shape, dtype)  # noqa: E731
    return (
        answers.permute(1, 0, 2).numpy(),
        right.permute(1, 0, 2).numpy(),
        stack(inputs, (0, 4 * v), np.float32),
        stack(items, (0,), np.int64),
        stack(labels, (0,), np.float32),
    )


def fit_transfer(config: GBDTConfig, inputs: np.ndarray, items: np.ndarray, labels: np.ndarray, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight (V, 4V), bias (V,)) of the logistic regression "right on item q" over ``inputs``, one weight row per q.

    Full-batch Adam on the mean log loss plus ``transfer_l2`` times the squared weights;
    rows are grouped by item, so each step costs one pass over the inputs.
    """
    from tqdm import tqdm

    v = config.num_items
    x, y, q = torch.from_numpy(inputs), torch.from_numpy(labels), torch.from_numpy(items)
    groups = [(i, x[q == i], y[q == i]) for i in torch.unique(q).tolist()]
    weight = torch.zeros(v, x.shape[1], requires_grad=True)
    bias = torch.zeros(v, requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=0.05)
    loss_fn = torch.nn.functional.binary_cross_entropy_with_logits
    with torch.enable_grad():  # callers may hold no_grad
        for _ in tqdm(range(config.transfer_steps if len(y) else 0), desc="transfer regression", unit="step", disable=not progress, leave=False):
            optimizer.zero_grad()
            loss = sum(loss_fn(xs @ weight[i] + bias[i], ys, reduction="sum") for i, xs, ys in groups) / len(y)
            (loss + config.transfer_l2 * weight.pow(2).sum()).backward()
            optimizer.step()
    return weight.detach(), bias.detach()


def with_tables(config: GBDTConfig, sequences: Sequence[EncodedSequence], progress: bool = False) -> GBDT:
    """A tree-less model whose count tables (and transfer features) come from ``sequences``."""
    tables = context_counts(config, sequences)
    model = GBDT(replace(config, num_trees=0, tree_nodes=1, tree_depth=0, table_rows=tuple(max(1, len(k)) for k, _, _ in tables)))
    items = np.concatenate([s.items for s in sequences]) if sequences else np.zeros(0, np.int64)
    right = np.concatenate([s.correct for s in sequences]).astype(np.float64) if sequences else np.zeros(0)
    v = config.num_items
    with torch.no_grad():
        model.item_counts.copy_(torch.tensor(np.stack([np.bincount(items, minlength=v), np.bincount(items, weights=right, minlength=v)]), dtype=torch.float32))
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
                raise ConfigError(f"gbdt: unsupported LightGBM split {node.get('decision_type')!r} / missing {node.get('missing_type')!r}")
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
    config = replace(tabled.config, num_trees=len(trees), tree_nodes=width, tree_depth=max((depth(n) for n in trees), default=0))
    fitted = GBDT(config)
    state = {k: v for k, v in tabled.state_dict().items() if k not in ("feature", "threshold", "left", "right", "value")}
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
    """LightGBM callback: a tqdm bar over boosting rounds, and the validation AUC per round."""

    order = 30

    def __init__(self, rounds: int, history: list[dict], enabled: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=rounds, desc="boosting", unit="tree", disable=not enabled, leave=False)
        self.history = history

    def __call__(self, env) -> None:
        scores = {(data, metric): float(score) for data, metric, score, _ in env.evaluation_result_list}
        row = {"epoch": env.iteration + 1, "train_loss": scores[("train", "binary_logloss")]}
        if ("valid", "auc") in scores:  # early stopping (a refit has no validation students)
            row.update(valid_logloss=scores[("valid", "binary_logloss")], valid_auc=scores[("valid", "auc")])
            self.bar.set_postfix(valid_auc=f"{row['valid_auc']:.4f}")
        self.history.append(row)
        self.bar.update(1)
