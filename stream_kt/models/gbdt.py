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

Trees: fitted with LightGBM by ``training.gbdt_fit`` (``pip install stream-kt[gbdt]``),
early-stopped on the validation students' AUC.  This module is the served model only:
the fitted trees and tables are its tensors, and prediction is torch (every backend,
the stream, parity); it is not trained by gradient descent (``fitted_by_gradient``).

State per student (float32, fixed shape): the last ``context`` interactions as tokens, the
last ten answers, per-item counters ``(5, V)`` and totals.  ``forward`` runs the same
update as ``step`` over the sequence, so offline and streamed predictions agree by
construction; each prediction reads only answers before it.

Questions with skill sets (``max_skills`` > 1; items (..., K) padded with V): the
per-item counters are per skill, and an answer updates every skill of its set as if
answered alone (its count, right answers, last position, own history and Elo ability,
each skill's expected P(correct) from its own ability and rate); the student's totals
move once per answer, by the mean of the skills' expected P(correct) and training rates.
A past answer's context token (and ``prev_item``) is its set's smallest skill.  The
features of a question are the mean of its skills' features (each skill asked on its
own), except ``item``, the set's smallest skill, plus one more column, ``skills``: the
set's size.  The count tables, the pair shifts and the transfer regression are fitted
on every (answer, skill) pair.  The mastery vector stays one value per skill: each
skill asked on its own (a set of one).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from stream_kt.data.batches import Batch
from stream_kt.errors import ConfigError
from stream_kt.models import register
from stream_kt.models.base import KTModel, State, StepOutput
from stream_kt.models.layout import as_input_width, set_mean

HEAD = ("item", "prev_item", "prev_correct", "prev2_item", "prev2_correct", "item_rate")
TAIL = (
    "own_rate", "item_answers", "item_right", "since_item", "answers", "accuracy", "last5", "last10",
    "residual", "residual_decay", "ability", "item_ability", "elo_p",
)  # fmt: skip


TRANSFER = (
    "pair_sum",
    "pair_mean",
    "pair_recent",
    "pair_recent_slow",
    "pair_recent_mean",
    "pair_max",
    "pair_min",
    "transfer_logit",
)


def feature_names(context: int, transfer: bool = True, sets: bool = False) -> list[str]:
    """The columns of ``GBDT.features``, in order (``sets``: a model of skill sets, whose
    last column is a set's size)."""
    return [
        *HEAD,
        *(f"ctx{k}_{what}" for k in range(1, context + 1) for what in ("rate", "count")),
        *TAIL,
        *(TRANSFER if transfer else ()),
        *(("skills",) if sets else ()),
    ]


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
    transfer: bool = True  # the transfer features
    pair_smoothing: float = 20.0  # pseudo-answers pulling a pair's rate towards the item's
    transfer_l2: float = 1e-5  # L2 penalty of the transfer regression
    transfer_steps: int = 300  # its full-batch Adam steps
    # shapes of the fitted tensors (set by fit; an unfitted model predicts 0.5)
    num_trees: int = 0
    tree_nodes: int = 1
    tree_depth: int = 0
    table_rows: tuple[int, ...] = ()  # keys in the ctx1 .. ctx<context> and own-history tables (default: 1 each)
    max_skills: int = 1  # K: an answer's skills, (..., K) padded with num_items, when above 1


@register
class GBDT(KTModel):
    name = "gbdt"
    fitted_by_gradient = False  # boosted by training.gbdt_fit
    takes_skill_sets = True
    # buffers (register_buffer in __init__)
    item_counts: torch.Tensor
    base_rate: torch.Tensor
    feature: torch.Tensor
    threshold: torch.Tensor
    left: torch.Tensor
    right: torch.Tensor
    value: torch.Tensor
    pair_shift: torch.Tensor
    transfer_weight: torch.Tensor
    transfer_bias: torch.Tensor
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
        self.register_buffer(
            "value", torch.zeros(t, m)
        )  # LightGBM folds its initial score into the first tree's leaves
        if config.transfer:
            self.register_buffer(
                "pair_shift", torch.zeros(v, 3, v)
            )  # [j, last answer on j (0 none, 1 wrong, 2 right), q]
            self.register_buffer("transfer_weight", torch.zeros(v, 4 * v))  # [q, transfer_inputs]
            self.register_buffer("transfer_bias", torch.zeros(v))

    # ---- state -------------------------------------------------------------------
    def initial_state(self, batch_size: int) -> State:
        v = self.config.num_items
        items = torch.zeros(batch_size, len(ITEM_ROWS), v)
        return {
            "tokens": torch.full(
                (batch_size, self.config.context), float(self.none_token)
            ),  # item * 2 + correct, newest last
            "recent": torch.full((batch_size, RECENT), -1.0),  # last ten answers, newest last; -1: none
            "items": items,
            "totals": torch.zeros(batch_size, len(TOTALS)),
        }

    def _item_rate(self) -> torch.Tensor:
        s = self.config.smoothing
        return (self.item_counts[1] + s * self.base_rate) / (self.item_counts[0] + s)  # (V,)

    def _update(self, state: State, items: torch.Tensor, correct: torch.Tensor) -> State:
        """The state after each row's student answers ``items`` (B,) or skill sets (B, K) padded with V,
        with ``correct`` (B,).

        Every skill of a set is updated as if answered alone; the totals once, by the set's means.
        """
        v = self.config.num_items
        right = correct.to(torch.float32)
        at = items.view(len(items), -1)  # (B, K): one item is a set of one
        valid = at < v
        # a column V for the padding to read (zeros) and write (dropped)
        per_item = torch.cat(
            [state["items"], state["items"].new_zeros(len(items), len(ITEM_ROWS), 1)], 2
        )  # (B, 5, V + 1)
        answers_q = per_item[:, 0].gather(1, at)  # (B, K)
        totals = state["totals"]
        answers = totals[:, 0]
        rates = torch.cat([self._item_rate(), self.base_rate.view(1)])[at]  # (B, K); padding: the base rate, finite
        ability_q = per_item[:, 4].gather(1, at)
        expected = torch.sigmoid(totals[:, 2:3] + ability_q + torch.logit(rates))  # each skill's, (B, K)
        surprise = right.unsqueeze(1) - expected
        own = per_item[:, 3].gather(1, at)
        changes = torch.stack(
            [
                answers_q + 1,
                per_item[:, 1].gather(1, at) + right.unsqueeze(1),
                answers.unsqueeze(1).expand_as(answers_q),  # position of this answer
                torch.remainder(
                    own * 3 + 1 + right.unsqueeze(1), 27
                ),  # last three answers on the item, base 3 (0: none)
                ability_q + 0.4 / (1 + 0.2 * answers_q) * surprise,
            ],
            1,
        )  # (B, 5, K)
        new_items = per_item.scatter(2, at.unsqueeze(1).expand(-1, len(ITEM_ROWS), -1), changes)[:, :, :v]
        rate, set_surprise = set_mean(rates, valid), set_mean(surprise, valid)  # (B,): one item's own
        new_totals = torch.stack(
            [
                answers + 1,
                totals[:, 1] + right,
                totals[:, 2] + 0.4 / (1 + 0.05 * answers) * set_surprise,
                totals[:, 3] + right - rate,
                0.9 * totals[:, 4] + right - rate,
            ],
            1,
        )
        token = (
            (at.amin(1) * 2 + correct).to(torch.float32).view(-1, 1)
        )  # a set's smallest skill (padding V is above all)
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
        return torch.cat(
            [
                (last == 2).to(torch.float32),
                (last == 1).to(torch.float32),
                torch.log1p(right),
                torch.log1p(answers - right),
            ],
            1,
        )

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
        """int64 keys (B, Q) of the context tables (last 1 .. ``context`` interactions, then own history)
        for query items (B, Q).

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
        """(B, Q, F) features of each row's student answering each of ``queries`` (B, Q) next, or skill sets
        (B, Q, K) padded with V.

        A set's features are the mean of its skills' (``item``: its smallest skill); a model of skill sets
        has one more column, the set's size (1 for a single item).
        """
        if self.config.max_skills == 1:
            return self.item_features(state, queries)
        if queries.dim() == 2:  # single items: sets of one
            queries = queries.unsqueeze(-1)
        batch, count, width = queries.shape
        valid = queries < self.config.num_items
        per_skill = self.item_features(state, queries.masked_fill(~valid, 0).view(batch, count * width)).view(
            batch, count, width, -1
        )
        mean = set_mean(per_skill, valid)  # (B, Q, F)
        size = valid.sum(-1, keepdim=True).to(mean.dtype)
        return torch.cat([queries.amin(-1, keepdim=True).to(mean.dtype), mean[..., 1:], size], -1)

    def item_features(self, state: State, queries: torch.Tensor) -> torch.Tensor:
        """(B, Q, F) features of each row's student answering each of the single items ``queries`` (B, Q)
        next (no ``skills`` column)."""
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

        def row(x: torch.Tensor) -> torch.Tensor:  # (B, 1) -> (B, Q)
            return x.expand_as(item_rate)

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

    def step(
        self,
        state: State,
        items: torch.Tensor,
        correct: torch.Tensor,
        times: torch.Tensor | None = None,
        questions: torch.Tensor | None = None,
    ) -> StepOutput:
        items = as_input_width(items, self.input_width, self.config.num_items)
        p_correct = torch.sigmoid(self.trees(self.features(state, items.unsqueeze(1))))[:, 0]
        state = self._update(state, items, correct)
        every = torch.arange(self.config.num_items, device=items.device).expand(items.shape[0], -1)
        mastery = torch.sigmoid(self.trees(self.features(state, every)))
        return StepOutput(p_correct, state, mastery)
