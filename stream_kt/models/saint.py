"""SAINT (Choi et al., L@S 2020) and SAINT+ (Shin et al., LAK 2021): encoder on exercises, decoder on responses.

Position k of a student's sequence holds the exercise answered at k (encoder input)
and the response given at k-1 (decoder input; a start token at k = 0), so the output
at k predicts the answer at k from exercises <= k and responses < k.  Both stacks use
causal self-attention; each decoder layer also attends to the encoder's outputs.
Layers are pre-norm (trains stably with plain Adam, no warm-up schedule).  Positions
enter as the age of a key relative to its query (learned per-head score bias).

Window: every attention layer sees its own position and the W-1 before it
(sliding-window attention, as in Longformer or Mistral), offline and streamed alike,
so the offline forward serves exactly what the stream computes for students with
more than W answers.  Stacked layers reach further back than W, which is why the
stream cannot keep raw interactions only: re-encoding a window of raw interactions
would cost O(W^2) per event.  Instead the state caches, for the last W-1 positions,
what the keys and values of every layer are computed from (the cache the stream
needs to answer one event with one query per layer over W-1 slots, O(W)):

    valid             (B, W-1)          1 where the slot holds a real position
    encoder_sources   (B, Le, W-1, D)   each encoder layer's normalised input
    encoder_out       (B, W-1, D)       the encoder's output (the decoder's cross-attention keys)
    decoder_sources   (B, Ld, W-1, D)   each decoder layer's normalised input
    previous_response (B, 1)            the last answer (2 = none yet): the next decoder input

All float32, as the stream stores them.  The mastery vector runs the newest position
once per candidate exercise (V queries per layer over the same cached slots).

SAINT+ adds, to each decoder input, the elapsed time (seconds spent answering) and
the lag time (seconds since the previous answer) of the previous interaction, as
log1p(seconds) through a bias-free projection, so absent times (the 3-line format has
none) are zeros and contribute nothing: SAINT+ then computes what SAINT computes.
``forward`` reads ``batch.times`` and ``step(..., times)`` the event's (B, 2)
[elapsed, lag] seconds (``KTModel.uses_times``); the state also carries
``previous_times`` (B, 2).

Questions with skill sets (``max_skills`` > 1; items (..., K) padded with V): as in
SAKT, a question's exercise embedding is the mean of its skills' exercise embeddings
(padding excluded), so the encoder sees one position per answer and the question's
prediction is the read-out of that one position.  The caches hold embeddings, so the
state is the same as for single skills.  The mastery vector stays one value per
skill: each skill asked on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from stream_kt.data.batches import Batch
from stream_kt.models import register
from stream_kt.models.attention import FeedForward, WindowedAttention, push
from stream_kt.models.base import KTModel, State, StepOutput
from stream_kt.models.layout import as_input_width, embed_set, gather_time, left_align_order, scatter_time

START = 2  # decoder input of a student's first position: no previous response


@dataclass(frozen=True)
class SAINTConfig:
    num_items: int  # vocabulary size V
    dim: int = 64  # D: embedding and attention size
    heads: int = 4
    encoder_layers: int = 2  # Le
    decoder_layers: int = 2  # Ld
    window: int = 100  # W: positions each attention layer sees (its own and the W-1 before it)
    dropout: float = 0.2
    max_skills: int = 1  # K: an answer's skills, (..., K) padded with num_items, when above 1


class EncoderLayer(nn.Module):
    def __init__(self, config: SAINTConfig) -> None:
        super().__init__()
        self.self_norm = nn.LayerNorm(config.dim)
        self.self_attention = WindowedAttention(config.dim, config.heads, config.window, age_bias=True)
        self.feed_forward_norm = nn.LayerNorm(config.dim)
        self.feed_forward = FeedForward(config.dim, config.dropout)
        self.dropout = nn.Dropout(config.dropout)

    def band(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Whole sequences: (B, T, D) -> (B, T, D)."""
        source = self.self_norm(x)
        x = x + self.dropout(self.self_attention.band(source, source, source, valid))
        return x + self.dropout(self.feed_forward(self.feed_forward_norm(x)))

    def newest(
        self, x: torch.Tensor, past_sources: torch.Tensor, past_valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Q candidates (B, Q, D) for the newest position over the cached W-1: (output, this layer's source)."""
        source = self.self_norm(x)
        x = x + self.dropout(
            self.self_attention.window_slots(
                source, past_sources, past_sources, past_valid, own_keys=source, own_values=source
            )
        )
        return x + self.dropout(self.feed_forward(self.feed_forward_norm(x))), source


class DecoderLayer(nn.Module):
    def __init__(self, config: SAINTConfig) -> None:
        super().__init__()
        self.self_norm = nn.LayerNorm(config.dim)
        self.self_attention = WindowedAttention(config.dim, config.heads, config.window, age_bias=True)
        self.cross_norm = nn.LayerNorm(config.dim)
        self.cross_attention = WindowedAttention(config.dim, config.heads, config.window, age_bias=True)
        self.feed_forward_norm = nn.LayerNorm(config.dim)
        self.feed_forward = FeedForward(config.dim, config.dropout)
        self.dropout = nn.Dropout(config.dropout)

    def band(self, y: torch.Tensor, encoded: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Whole sequences: (B, T, D) decoder stream and encoder output -> (B, T, D)."""
        source = self.self_norm(y)
        y = y + self.dropout(self.self_attention.band(source, source, source, valid))
        y = y + self.dropout(self.cross_attention.band(self.cross_norm(y), encoded, encoded, valid))
        return y + self.dropout(self.feed_forward(self.feed_forward_norm(y)))

    def newest(
        self,
        y: torch.Tensor,
        past_sources: torch.Tensor,
        encoded: torch.Tensor,
        past_encoded: torch.Tensor,
        past_valid: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Q candidates (B, Q, D) for the newest position: (output, this layer's source)."""
        source = self.self_norm(y)
        y = y + self.dropout(
            self.self_attention.window_slots(
                source, past_sources, past_sources, past_valid, own_keys=source, own_values=source
            )
        )
        y = y + self.dropout(
            self.cross_attention.window_slots(
                self.cross_norm(y), past_encoded, past_encoded, past_valid, own_keys=encoded, own_values=encoded
            )
        )
        return y + self.dropout(self.feed_forward(self.feed_forward_norm(y))), source


@dataclass
class NewestPosition:
    """What one step adds to the caches: the newest position's per-layer sources and encoder output."""

    logits: torch.Tensor  # (B, Q)
    encoder_sources: torch.Tensor  # (B, Le, Q, D)
    encoder_out: torch.Tensor  # (B, Q, D)
    decoder_sources: torch.Tensor  # (B, Ld, Q, D)


@register
class SAINT(KTModel):
    name = "saint"
    takes_skill_sets = True
    Config = SAINTConfig

    def __init__(self, config: SAINTConfig) -> None:
        super().__init__(config)
        if config.window < 2:
            raise ValueError("window must be at least 2")
        self.exercise_embed = nn.Embedding(config.num_items, config.dim)
        self.response_embed = nn.Embedding(3, config.dim)  # wrong, right, START
        self.encoder = nn.ModuleList(EncoderLayer(config) for _ in range(config.encoder_layers))
        self.encoder_norm = nn.LayerNorm(config.dim)
        self.decoder = nn.ModuleList(DecoderLayer(config) for _ in range(config.decoder_layers))
        self.decoder_norm = nn.LayerNorm(config.dim)
        self.read_out = nn.Linear(config.dim, 1)

    @property
    def encoder_layers(self) -> list[EncoderLayer]:
        return cast("list[EncoderLayer]", list(self.encoder))

    @property
    def decoder_layers(self) -> list[DecoderLayer]:
        return cast("list[DecoderLayer]", list(self.decoder))

    def exercises(self, items: torch.Tensor) -> torch.Tensor:
        """Encoder input of exercises: items (...) or skill sets (..., K) when ``max_skills`` > 1 (the mean
        over the set) -> (..., D)."""
        if self.config.max_skills == 1:
            return self.exercise_embed(items)
        return embed_set(self.exercise_embed, items, items < self.config.num_items)

    def decoder_inputs(self, previous_responses: torch.Tensor, previous_times: torch.Tensor | None) -> torch.Tensor:
        """(B, N) previous responses (START where none) -> (B, N, D).  SAINT has no time inputs."""
        return self.response_embed(previous_responses)

    def forward(self, batch: Batch) -> torch.Tensor:
        return self._forward(batch, times=None)

    def _forward(self, batch: Batch, times: torch.Tensor | None) -> torch.Tensor:
        """``times``: (B, T, 2) elapsed and lag seconds of each interaction, or None."""
        order = left_align_order(batch.mask)  # real interactions first: index = position k
        items, correct, mask = (gather_time(x, order) for x in (batch.items, batch.correct, batch.mask))
        # padding pointed at item 0 (a set of item 0s); it is masked out of every key set
        items, correct = items * mask.view(mask.shape + (1,) * (items.dim() - 2)), correct * mask
        start = torch.full_like(correct[:, :1], START)
        previous_responses = torch.cat([start, correct[:, :-1]], 1)  # (B, T): decoder input at k is the answer at k-1
        previous_times = None
        if times is not None:
            aligned = gather_time(times, order) * mask.unsqueeze(-1)
            previous_times = torch.cat([torch.zeros_like(aligned[:, :1]), aligned[:, :-1]], 1)  # (B, T, 2)
        x = self.exercises(items)  # (B, T, D)
        for layer in self.encoder_layers:
            x = layer.band(x, mask)
        encoded = self.encoder_norm(x)
        y = self.decoder_inputs(previous_responses, previous_times)  # (B, T, D)
        for decoder_layer in self.decoder_layers:
            y = decoder_layer.band(y, encoded, mask)
        answer_logits = self.read_out(self.decoder_norm(y)).squeeze(-1)  # (B, T): logit at k predicts the answer at k
        # batch logit t predicts the answer at t+1: shift left by one (the last has no next)
        next_logits = torch.cat([answer_logits[:, 1:], torch.zeros_like(answer_logits[:, :1])], 1)
        return scatter_time(next_logits * mask, order)

    def initial_state(self, batch_size: int) -> State:
        config = self.config
        slots = config.window - 1
        return {
            "valid": torch.zeros(batch_size, slots),
            "encoder_sources": torch.zeros(batch_size, config.encoder_layers, slots, config.dim),
            "encoder_out": torch.zeros(batch_size, slots, config.dim),
            "decoder_sources": torch.zeros(batch_size, config.decoder_layers, slots, config.dim),
            "previous_response": torch.full((batch_size, 1), float(START)),
        }

    def _next_decoder_input(self, state: State) -> torch.Tensor:
        """(B, 1, D): the decoder input of the position the next event will fill."""
        return self.decoder_inputs(state["previous_response"].long(), None)

    def _remember_answer(self, correct: torch.Tensor, times: torch.Tensor | None) -> State:
        """State entries the next position's decoder input is made from."""
        return {"previous_response": correct.float().unsqueeze(-1)}

    def _newest_position(self, state: State, exercises: torch.Tensor, decoder_input: torch.Tensor) -> NewestPosition:
        """Run the newest position for Q candidate exercises (B, Q, D) over the cached slots."""
        valid = state["valid"] > 0.5  # (B, W-1)
        x, encoder_sources = exercises, []
        for index, layer in enumerate(self.encoder_layers):
            x, source = layer.newest(x, state["encoder_sources"][:, index], valid)
            encoder_sources.append(source)
        encoded = self.encoder_norm(x)  # (B, Q, D)
        y, decoder_sources = decoder_input.expand_as(x), []
        for index, decoder_layer in enumerate(self.decoder_layers):
            y, source = decoder_layer.newest(
                y, state["decoder_sources"][:, index], encoded, state["encoder_out"], valid
            )
            decoder_sources.append(source)
        logits = self.read_out(self.decoder_norm(y)).squeeze(-1)  # (B, Q)
        return NewestPosition(logits, torch.stack(encoder_sources, 1), encoded, torch.stack(decoder_sources, 1))

    def step(
        self,
        state: State,
        items: torch.Tensor,
        correct: torch.Tensor,
        times: torch.Tensor | None = None,
        questions: torch.Tensor | None = None,
    ) -> StepOutput:
        return self._step(state, items, correct, times=None)

    def _step(self, state: State, items: torch.Tensor, correct: torch.Tensor, times: torch.Tensor | None) -> StepOutput:
        items = as_input_width(items, self.input_width, self.config.num_items)
        newest = self._newest_position(state, self.exercises(items).unsqueeze(1), self._next_decoder_input(state))
        p_correct = torch.sigmoid(newest.logits[:, 0])  # (B,)
        new_state = {
            "valid": push(state["valid"], torch.ones_like(correct)),
            "encoder_sources": torch.cat([state["encoder_sources"][:, :, 1:], newest.encoder_sources], 2),
            "encoder_out": torch.cat([state["encoder_out"][:, 1:], newest.encoder_out], 1),
            "decoder_sources": torch.cat([state["decoder_sources"][:, :, 1:], newest.decoder_sources], 2),
            **self._remember_answer(correct, times),
        }
        every_exercise = self.exercise_embed.weight.unsqueeze(0).expand(len(items), -1, -1)  # (B, V, D)
        mastery = torch.sigmoid(
            self._newest_position(new_state, every_exercise, self._next_decoder_input(new_state)).logits
        )  # (B, V)
        return StepOutput(p_correct, new_state, mastery)


@register
class SAINTPlus(SAINT):
    name = "saint_plus"
    Config = SAINTConfig
    uses_times = True

    def __init__(self, config: SAINTConfig) -> None:
        super().__init__(config)
        # no bias: zero (absent) times add nothing to the decoder input
        self.time_projection = nn.Linear(2, config.dim, bias=False)

    def exercises(self, items: torch.Tensor) -> torch.Tensor:
        """Encoder input of exercises: items (...) or skill sets (..., K) when ``max_skills`` > 1 (the mean
        over the set) -> (..., D)."""
        if self.config.max_skills == 1:
            return self.exercise_embed(items)
        return embed_set(self.exercise_embed, items, items < self.config.num_items)

    def decoder_inputs(self, previous_responses: torch.Tensor, previous_times: torch.Tensor | None) -> torch.Tensor:
        embedded = self.response_embed(previous_responses)
        if previous_times is None:
            return embedded
        return embedded + self.time_projection(torch.log1p(previous_times.clamp(min=0)))  # (B, N, D)

    def forward(self, batch: Batch) -> torch.Tensor:
        return self._forward(batch, batch.times)

    def initial_state(self, batch_size: int) -> State:
        return {**super().initial_state(batch_size), "previous_times": torch.zeros(batch_size, 2)}

    def _next_decoder_input(self, state: State) -> torch.Tensor:
        return self.decoder_inputs(state["previous_response"].long(), state["previous_times"].unsqueeze(1))

    def _remember_answer(self, correct: torch.Tensor, times: torch.Tensor | None) -> State:
        recorded = torch.zeros(len(correct), 2, device=correct.device) if times is None else times.float()
        return {**super()._remember_answer(correct, times), "previous_times": recorded}

    def step(
        self,
        state: State,
        items: torch.Tensor,
        correct: torch.Tensor,
        times: torch.Tensor | None = None,
        questions: torch.Tensor | None = None,
    ) -> StepOutput:
        """``times``: (B, 2) [elapsed, lag] seconds of this interaction (None: unknown, zeros)."""
        return self._step(state, items, correct, times)
