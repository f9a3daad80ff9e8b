"""Deep Knowledge Tracing (Piech et al. 2015): interaction embedding -> LSTM -> one logit per item.

An interaction (item i, response r) is embedded as index ``i + num_items * r``; index
``2 * num_items`` is padding.  The hidden state after interaction t predicts every
item at t+1; only the logit of the item actually answered at t+1 is scored.

Questions with skill sets (``max_skills`` > 1; items (..., K) padded with V): an answer
is embedded as the mean of its skills' interaction embeddings, and its prediction is
the mean of its skills' logits, so what is learnt of a skill serves every question
that tests it.  With ``num_questions`` > 0 a question adds a learnt offset to its
prediction's logit (its easiness, a Rasch-style difficulty) and, scaled by that
offset, a learnt direction per response to its embedding (a correct answer to a hard
question says more); question 0, none or unseen, has offset 0: the skills alone.

Initialisation (LSTM gates are sigmoid/tanh, so Glorot/Xavier, not Kaiming, which is
derived for ReLU): input-to-hidden weights Xavier-uniform; hidden-to-hidden weights
orthogonal per gate (keeps the recurrent Jacobian's spectrum near 1 over 100+ steps);
biases zero except the forget gate at 1 (Jozefowicz et al. 2015) so early training
remembers; the embedding N(0, 1) (a one-hot lookup has fan-in 1); the output layer
Xavier-uniform with zero bias.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from stream_kt.data.batches import Batch
from stream_kt.models import register
from stream_kt.models.base import KTModel, State, StepOutput, next_answer_loss
from stream_kt.models.layout import gather_time, item_logits, left_align_order, scatter_time, set_mean
from stream_kt.models.recurrent import lstm_step

QUESTION_LR_SCALE = 30.0  # Adam's step size of the question offsets, relative to the model's


@dataclass(frozen=True)
class DKTConfig:
    num_items: int  # vocabulary size V
    embed_dim: int = 200  # interaction embedding size
    hidden_size: int = 200  # LSTM state size (the DKT paper used 200)
    num_layers: int = 1
    dropout: float = 0.2  # on the LSTM output, before the prediction layer (training only)
    max_skills: int = 1  # K: an answer's skills, (..., K) padded with num_items, when above 1
    num_questions: int = 0  # questions with a learnt offset (index 1..); 0: the skills alone


@register
class DKT(KTModel):
    name = "dkt"
    distillable = True
    takes_skill_sets = True
    uses_questions = True
    Config = DKTConfig

    def __init__(self, config: DKTConfig) -> None:
        super().__init__(config)
        self.pad_index = 2 * config.num_items
        self.embed = nn.Embedding(2 * config.num_items + 1, config.embed_dim, padding_idx=self.pad_index)
        self.lstm = nn.LSTM(config.embed_dim, config.hidden_size, num_layers=config.num_layers, batch_first=True)
        self.dropout = nn.Dropout(config.dropout)
        self.out = nn.Linear(config.hidden_size, config.num_items)
        self.question_offset: nn.Embedding | None = None
        if config.num_questions:
            self.question_offset = nn.Embedding(config.num_questions + 1, 1, padding_idx=0)
            self.offset_direction = nn.Parameter(torch.empty(2, config.embed_dim))
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.normal_(self.embed.weight, 0.0, 1.0)
        with torch.no_grad():
            self.embed.weight[self.pad_index].zero_()
        hidden = self.config.hidden_size
        for name, param in self.lstm.named_parameters():
            if name.startswith("weight_ih"):
                for gate in param.chunk(4, 0):
                    nn.init.xavier_uniform_(gate)
            elif name.startswith("weight_hh"):
                for gate in param.chunk(4, 0):
                    nn.init.orthogonal_(gate)
            else:  # bias_ih / bias_hh, gate order i, f, g, o; the two biases add, so set f once
                nn.init.zeros_(param)
                if name.startswith("bias_ih"):
                    nn.init.ones_(param[hidden : 2 * hidden])
        nn.init.xavier_uniform_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        if self.question_offset is not None:
            nn.init.zeros_(self.question_offset.weight)  # every question starts as its skills
            nn.init.normal_(self.offset_direction, 0.0, 0.1)

    def _interaction(self, items: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
        return items + self.config.num_items * correct

    def embedded(
        self, items: torch.Tensor, correct: torch.Tensor, questions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Input embedding of interactions (...) -> (..., E): one item, or the mean over a skill set (..., K);
        plus the question's term."""
        if items.dim() == correct.dim():
            embedded = self.embed(self._interaction(items, correct))
        else:
            valid = items < self.config.num_items
            index = torch.where(valid, self._interaction(items, correct.unsqueeze(-1)), self.pad_index)
            embedded = set_mean(self.embed(index), valid)
        if self.question_offset is not None and questions is not None:
            embedded = embedded + self.question_offset(questions) * self.offset_direction[correct]
        return embedded

    def answer_logits(
        self, hidden: torch.Tensor, items: torch.Tensor, questions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logit that the answer to ``items`` (and ``questions``) is correct, from ``hidden`` (..., H)."""
        logits = item_logits(self.out, hidden, items)
        if self.question_offset is not None and questions is not None:
            logits = logits + self.question_offset(questions).squeeze(-1)
        return logits

    def hidden_states(
        self,
        items: torch.Tensor,
        correct: torch.Tensor,
        mask: torch.Tensor,
        state: State | None = None,
        questions: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, State]:
        """LSTM output after each real interaction, (B, T, H), zero at padding; and the final state.

        Real positions may sit anywhere in a row (pre- or post-padding): they are moved to
        the front in order, run packed (padding never reaches the LSTM), and put back.
        """
        batch_size, length = mask.shape
        lengths = mask.sum(1)
        order = left_align_order(mask)
        if items.dim() == 2 and (questions is None or self.question_offset is None):  # one skill an answer
            embedded = self.embed(
                gather_time(self._interaction(items, correct).masked_fill(~mask, self.pad_index), order)
            )  # (B, T, E)
        else:
            embedded = gather_time(self.embedded(items, correct, questions) * mask.unsqueeze(-1), order)
        packed = pack_padded_sequence(embedded, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        initial = (
            None
            if state is None
            else (state["h"].transpose(0, 1).contiguous(), state["c"].transpose(0, 1).contiguous())
        )
        output, (h_n, c_n) = self.lstm(packed, initial)
        output, _ = pad_packed_sequence(output, batch_first=True, total_length=length)  # (B, T, H) left-aligned
        hidden = scatter_time(output, order) * mask.unsqueeze(-1)
        final = {"h": h_n.transpose(0, 1), "c": c_n.transpose(0, 1)}  # (B, L, H): batch first, as State requires
        if state is not None:  # a row with no real interaction keeps the state it came with
            empty = (lengths == 0).view(-1, 1, 1)
            final = {k: torch.where(empty, state[k], v) for k, v in final.items()}
        return hidden, final

    def forward(self, batch: Batch, state: State | None = None) -> torch.Tensor:
        hidden, _ = self.hidden_states(batch.items, batch.correct, batch.mask, state, batch.questions)
        return self.answer_logits(
            self.dropout(hidden), batch.next_items, batch.next_questions
        )  # (B, T): the item answered next

    def loss_with_mastery(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The next-answer loss and every item's logit after each interaction, (B, T, V), from one pass."""
        hidden = self.dropout(
            self.hidden_states(batch.items, batch.correct, batch.mask, questions=batch.questions)[0]
        )  # (B, T, H)
        return next_answer_loss(self.answer_logits(hidden, batch.next_items, batch.next_questions), batch), self.out(
            hidden
        )

    def parameter_groups(self, learning_rate: float) -> list[dict[str, Any]]:
        """The question offsets step ``QUESTION_LR_SCALE`` times faster: each is one scalar that starts at 0 and
        is moved by its question's answers alone, at most about one step size a step under Adam."""
        if self.question_offset is None:
            return super().parameter_groups(learning_rate)
        offsets = {id(self.question_offset.weight)}
        rest = [p for p in self.parameters() if id(p) not in offsets]
        return [
            {"params": rest, "lr": learning_rate},
            {"params": [self.question_offset.weight], "lr": learning_rate * QUESTION_LR_SCALE},
        ]

    def initial_state(self, batch_size: int) -> State:
        shape = (batch_size, self.config.num_layers, self.config.hidden_size)
        return {"h": torch.zeros(shape), "c": torch.zeros(shape)}

    def step(
        self,
        state: State,
        items: torch.Tensor,
        correct: torch.Tensor,
        times: torch.Tensor | None = None,
        questions: torch.Tensor | None = None,
    ) -> StepOutput:
        h, c = state["h"], state["c"]  # (B, L, H)
        p_correct = torch.sigmoid(
            self.answer_logits(h[:, -1], items, questions)
        )  # (B,): the prediction reads the last layer
        embedded = self.embedded(items, correct, questions)  # (B, E)
        h_n, c_n = lstm_step(self.lstm, embedded, h, c)  # (B, L, H) each
        mastery = torch.sigmoid(self.out(h_n[:, -1]))  # (B, V)
        return StepOutput(p_correct, {"h": h_n, "c": c_n}, mastery)

    def inference_module(self, state_names: list[str]) -> nn.Module:
        if self.config.num_layers != 1:
            return super().inference_module(state_names)
        return DKTInferenceStep(self, state_names)

    def mastery(self, state: State) -> torch.Tensor:
        """P(correct) for every item given ``state``: (B, V)."""
        return torch.sigmoid(self.out(state["h"][:, -1]))


class DKTInferenceStep(nn.Module):
    """DKT's one-step update for serving, with the embedding folded into the LSTM.

    An interaction's embedding only ever enters the LSTM through ``W_ih e + b``, so
    that product is precomputed once per interaction index: the step is a row gather,
    one (B, H) x (H, 4H) matmul for the recurrence and one (B, H) x (H, V) for mastery.
    Inputs and outputs as ``KTModel.inference_module`` (state names c, h).

    Skill sets (items (B, K) padded with V) take the mean of their skills' rows of the
    input gates (the bias counts once: the mean of K copies of it) and of their logits;
    a question's offset adds to the logit and, times the folded direction of its
    response, to the input gates.

    Pointwise work is one sigmoid over all four gates: the cell gate's weights are
    doubled, so ``tanh(g) = 2 sigmoid(2g) - 1`` reads off the same sigmoid (and the new
    cell's tanh is taken the same way); on the CPU, torch's ``tanh`` costs several times
    its ``sigmoid``.  ``pack_for_cpu`` then lets oneDNN run both matmuls on weights
    reordered once for it, the mastery sigmoid fused into the second; measured in
    docs/performance.md.
    """

    input_gates: torch.Tensor  # buffers
    question_offset: torch.Tensor
    question_gates: torch.Tensor
    recurrent: torch.Tensor
    out_weight: torch.Tensor
    out_weight_t: torch.Tensor
    out_bias: torch.Tensor

    def __init__(self, model: DKT, state_names: list[str]) -> None:
        super().__init__()
        assert list(state_names) == ["c", "h"], state_names
        self.num_items = model.config.num_items
        hidden = model.config.hidden_size
        lstm = model.lstm
        with torch.no_grad():
            weight_ih, weight_hh, bias_ih, bias_hh = (
                cast(torch.Tensor, getattr(lstm, name))
                for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
            )
            gates = model.embed.weight @ weight_ih.T + bias_ih + bias_hh  # (2V+1, 4H), gate order i, f, g, o
            recurrent = weight_hh.T.clone()  # (H, 4H)
            for folded in (gates, recurrent):
                folded[:, 2 * hidden : 3 * hidden] *= 2  # the cell gate, for tanh(g) = 2 sigmoid(2g) - 1
            self.register_buffer("input_gates", gates.contiguous())
            self.register_buffer("recurrent", recurrent.contiguous())
            self.register_buffer("out_weight", model.out.weight.detach().clone())  # (V, H)
            self.register_buffer("out_weight_t", model.out.weight.T.contiguous())  # (H, V)
            self.register_buffer("out_bias", model.out.bias.detach().clone())  # (V,)
            offset = model.question_offset
            self.reads_questions = offset is not None
            if offset is not None:
                direction = (
                    model.offset_direction @ weight_ih.T
                )  # (2, 4H): a response's direction through the input weights
                direction[:, 2 * hidden : 3 * hidden] *= 2
                self.register_buffer(
                    "question_offset", offset.weight.detach()[:, 0].clone()
                )  # (Q + 1,), 0 for question 0
                self.register_buffer("question_gates", direction.contiguous())
        self.packed: tuple[torch.Tensor, torch.Tensor] | None = None

    def pack_for_cpu(self, batch_size: int) -> bool:
        """Reorder the two matmuls' weights for oneDNN (torch's CPU kernels) once; False where
        this torch has no oneDNN.  The packed weights are opaque tensors TorchScript cannot
        hold: a packed step runs eagerly, on CPU tensors only."""
        onednn = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")  # type: ignore[no-untyped-call]
        if not onednn or self.recurrent.device.type != "cpu":
            return False
        with torch.no_grad():
            reorder = torch.ops.mkldnn._reorder_linear_weight
            self.packed = (reorder(self.recurrent.T.contiguous(), batch_size), reorder(self.out_weight, batch_size))
        return True

    def forward(
        self,
        c: torch.Tensor,
        h: torch.Tensor,
        items: torch.Tensor,
        correct: torch.Tensor,
        times: torch.Tensor,
        questions: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:  # times: unused
        h0, c0 = h[:, 0], c[:, 0]  # (B, H): one layer
        if items.dim() == 1:
            logit = (h0 * self.out_weight.index_select(0, items)).sum(-1) + self.out_bias.index_select(0, items)  # (B,)
            inputs = self.input_gates.index_select(0, items + self.num_items * correct)  # (B, 4H)
        else:  # skill sets (B, K), padded with V
            valid = items < self.num_items
            index = items.masked_fill(~valid, 0)
            logit = set_mean((h0.unsqueeze(1) * self.out_weight[index]).sum(-1) + self.out_bias[index], valid)  # (B,)
            inputs = set_mean(self.input_gates[index + self.num_items * correct.unsqueeze(-1)], valid)  # (B, 4H)
        if questions is not None and self.reads_questions:
            offset = self.question_offset.index_select(0, questions)  # (B,)
            logit = logit + offset
            inputs = inputs + offset.unsqueeze(-1) * self.question_gates.index_select(0, correct)
        p_correct = torch.sigmoid(logit)
        if self.packed is None:
            gates = torch.addmm(inputs, h0, self.recurrent)
        else:
            gates = torch.ops.mkldnn._linear_pointwise(h0, self.packed[0], None, "none", [], "").add_(inputs)
        in_gate, forget_gate, cell_gate, out_gate = torch.sigmoid(gates).chunk(4, 1)
        c1 = torch.addcmul(forget_gate * c0, in_gate, cell_gate * 2 - 1)  # (B, H)
        h1 = out_gate * (torch.sigmoid(c1 * 2) * 2 - 1)
        if self.packed is None:
            mastery = torch.sigmoid(torch.addmm(self.out_bias, h1, self.out_weight_t))  # (B, V)
        else:
            mastery = torch.ops.mkldnn._linear_pointwise(h1, self.packed[1], self.out_bias, "sigmoid", [], "")
        return p_correct, c1.unsqueeze(1), h1.unsqueeze(1), mastery
