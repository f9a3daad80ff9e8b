"""The backend interface and the eager (reference) backend."""

from __future__ import annotations

from typing import Callable

import torch

from stream_kt.errors import ConfigError
from stream_kt.models import KTModel, State, StepOutput


class StepBackend:
    """Eager PyTorch: the reference every other backend must match."""

    name = "eager"

    def __init__(self, model: KTModel, batch_size: int) -> None:
        if batch_size < 1:
            raise ConfigError("batch size must be at least 1")
        self.model = model.eval()
        self.batch_size = batch_size
        self._blank = model.initial_state(1)  # one padding row's state

    def initial_state(self, rows: int) -> State:
        return self.model.initial_state(rows)

    def _step_fixed(self, state: State, items: torch.Tensor, correct: torch.Tensor) -> StepOutput:
        """Exactly (B, ...) in, (B, ...) out.  Subclasses replace this with a compiled call."""
        return self.model.step(state, items, correct)

    @torch.no_grad()
    def step(self, state: State, items: torch.Tensor, correct: torch.Tensor) -> StepOutput:
        """Apply one interaction to each of ``n`` rows, any ``n``: pad up to B, split above B."""
        n = items.shape[0]
        outputs = []
        for start in range(0, n, self.batch_size):
            stop = min(start + self.batch_size, n)
            outputs.append(self._padded(state, items, correct, start, stop))
        if len(outputs) == 1:
            return outputs[0]
        return StepOutput(
            torch.cat([o.p_correct for o in outputs]),
            {k: torch.cat([o.state[k] for o in outputs]) for k in outputs[0].state},
            torch.cat([o.mastery for o in outputs]),
        )

    def _padded(self, state: State, items: torch.Tensor, correct: torch.Tensor, start: int, stop: int) -> StepOutput:
        rows = stop - start
        pad = self.batch_size - rows
        chunk_state = {k: v[start:stop] for k, v in state.items()}
        chunk_items, chunk_correct = items[start:stop], correct[start:stop]
        if pad:
            chunk_state = {k: torch.cat([v, self._blank[k].expand(pad, *v.shape[1:])]) for k, v in chunk_state.items()}
            chunk_items = torch.cat([chunk_items, chunk_items.new_zeros(pad)])
            chunk_correct = torch.cat([chunk_correct, chunk_correct.new_zeros(pad)])
        out = self._step_fixed(chunk_state, chunk_items, chunk_correct)
        # drop the padding rows: their outputs are never used
        return StepOutput(out.p_correct[:rows], {k: v[:rows] for k, v in out.state.items()}, out.mastery[:rows])


BACKENDS: dict[str, Callable[[KTModel, int], StepBackend]] = {"eager": StepBackend}


def make_backend(name: str, model: KTModel, batch_size: int) -> StepBackend:
    try:
        factory = BACKENDS[name]
    except KeyError:
        raise ConfigError(f"unknown backend {name!r}: choose one of {', '.join(sorted(BACKENDS))}") from None
    return factory(model, batch_size)
