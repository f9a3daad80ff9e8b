"""The backend interface, the eager reference, and the shared fixed-shape machinery.

A backend runs ``model.inference_module()`` — the model's one-step update as a module
of positional tensors ``(*state, items, correct[, times]) -> (p_correct, *state,
mastery)``, ``times`` (B, 2) only for models that use them — on exactly ``(B, ...)``
inputs.  ``step`` accepts any number of rows: fewer than B are padded up with blank
rows whose outputs are dropped, more than B are split into chunks of B.  Nothing is
ever recompiled per call.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import torch

from stream_kt.errors import ConfigError
from stream_kt.models import KTModel, State, StepOutput

MASTERY_DTYPES = (torch.float32, torch.float16)


class StepBackend:
    """Eager PyTorch: the reference every other backend must match.

    The host contract, which every backend keeps whatever device it computes on: ``step``
    takes and returns CPU tensors, and ``initial_state`` gives CPU rows (the stream
    stores them).  ``mastery_dtype``: float32, or float16 on request (half the bytes).
    """

    name = "eager"
    device = torch.device("cpu")

    def __init__(self, model: KTModel, batch_size: int, mastery_dtype: torch.dtype = torch.float32) -> None:
        if batch_size < 1:
            raise ConfigError("batch size must be at least 1")
        if mastery_dtype not in MASTERY_DTYPES:
            raise ConfigError(f"mastery dtype {mastery_dtype}: choose float32 or float16")
        self.model = model.eval()  # the host model; a device backend keeps its own copy
        self.batch_size = batch_size
        self.mastery_dtype = mastery_dtype
        self.state_names = sorted(model.initial_state(1))  # positional order of the state tensors
        self._blank = self.initial_state(1)  # one padding row's state, on the host
        self.module = self._build()

    def _build(self) -> Callable[..., Any]:
        """The fixed-shape callable ``_step_fixed`` runs (the device step)."""
        return self.compile(self.model.inference_module(self.state_names).eval(), self.example_inputs())

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        state = self.model.initial_state(self.batch_size)
        width = self.model.input_width
        items = torch.zeros((self.batch_size, width) if width > 1 else (self.batch_size,), dtype=torch.long)
        correct = torch.zeros(self.batch_size, dtype=torch.long)
        times = torch.zeros(self.batch_size, 2)
        questions = (correct.clone().to(self.device),) if self.model.reads_questions else ()
        return (
            *(state[k].to(self.device) for k in self.state_names),
            items.to(self.device),
            correct.to(self.device),
            times.to(self.device),
            *questions,
        )

    def compile(self, module: Callable[..., Any], example_inputs: tuple[torch.Tensor, ...]) -> Callable[..., Any]:
        """Turn the fixed-shape module into the callable ``_step_fixed`` runs; eager runs it as is."""
        return module

    def initial_state(self, rows: int) -> State:
        """``rows`` students with no answers yet, on the host (a model may build them on its parameters' device)."""
        return {k: v.cpu() for k, v in self.model.initial_state(rows).items()}

    def _step_fixed(self, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """Exactly (B, ...) in, (B, ...) out, on ``self.device``."""
        return self.module(*inputs)

    @torch.no_grad()
    def step(
        self,
        state: State,
        items: torch.Tensor,
        correct: torch.Tensor,
        times: torch.Tensor | None = None,
        questions: torch.Tensor | None = None,
    ) -> StepOutput:
        """Apply one interaction to each of ``n`` rows, any ``n``: pad up to B, split above B.

        ``times``: (n, 2) [elapsed, lag] seconds of each event (None: unknown, zeros);
        models that do not use them ignore them.  ``items`` (n, K) are skill sets padded
        with V (models with ``input_width`` K); ``questions`` (n,) reach the models that
        read them (None: none known, zeros).
        """
        n = items.shape[0]
        times = torch.zeros(n, 2) if times is None else times.float()
        if self.model.reads_questions:
            questions = torch.zeros(n, dtype=torch.long) if questions is None else questions
        else:
            questions = None
        outputs = [
            self._padded(state, items, correct, times, questions, start, min(start + self.batch_size, n))
            for start in range(0, n, self.batch_size)
        ]
        if len(outputs) == 1:
            return outputs[0]
        return StepOutput(
            torch.cat([o.p_correct for o in outputs]),
            {k: torch.cat([o.state[k] for o in outputs]) for k in self.state_names},
            torch.cat([o.mastery for o in outputs]),
        )

    def _padded(
        self,
        state: State,
        items: torch.Tensor,
        correct: torch.Tensor,
        times: torch.Tensor,
        questions: torch.Tensor | None,
        start: int,
        stop: int,
    ) -> StepOutput:
        rows = stop - start
        pad = self.batch_size - rows
        chunk = [state[k][start:stop] for k in self.state_names]
        events = [items[start:stop].long(), correct[start:stop].long(), times[start:stop]]
        if questions is not None:
            events.append(questions[start:stop].long())
        if pad:
            chunk = [torch.cat([v, self._blank[k].expand(pad, *v.shape[1:])]) for k, v in zip(self.state_names, chunk)]
            events = [torch.cat([v, v.new_zeros(pad, *v.shape[1:])]) for v in events]
        inputs = tuple(t.to(self.device, non_blocking=True) for t in (*chunk, *events))
        p_correct, *new_state, mastery = self._step_fixed(inputs)
        # drop the padding rows: their outputs are never used
        return StepOutput(
            p_correct[:rows].cpu(),
            {k: v[:rows].cpu() for k, v in zip(self.state_names, new_state)},
            mastery[:rows].to("cpu", self.mastery_dtype),
        )


BackendFactory = Callable[..., StepBackend]  # (model, batch_size, mastery_dtype) -> backend
BACKENDS: dict[str, BackendFactory] = {}
_REQUIRES: dict[str, Callable[[], str | None]] = {}  # backend -> check returning why it is unavailable


def register_backend(name: str, factory: BackendFactory, unavailable: Callable[[], str | None] = lambda: None) -> None:
    BACKENDS[name] = factory
    _REQUIRES[name] = unavailable


def unavailable_reason(name: str) -> str | None:
    return _REQUIRES[name]()


def module_missing(module: str, package: str) -> Callable[[], str | None]:
    return lambda: (
        None if importlib.util.find_spec(module) else f"backend needs the {package} package, which is not installed"
    )


def available_backends() -> list[str]:
    return [name for name in BACKENDS if unavailable_reason(name) is None]


AUTO_ORDER = ("neuron", "cuda", "cpu")


def resolve_backend_name(name: str) -> str:
    if name == "auto":
        return next(n for n in AUTO_ORDER if unavailable_reason(n) is None)
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}: choose one of auto, {', '.join(sorted(BACKENDS))}")
    reason = unavailable_reason(name)
    if reason:
        raise ConfigError(f"{name} {reason}")
    return name


def make_backend(name: str, model: KTModel, batch_size: int, mastery_dtype: torch.dtype = torch.float32) -> StepBackend:
    """The backend ``name`` (or the best available for ``auto``) for fixed batch ``batch_size``: compiled once, here."""
    return BACKENDS[resolve_backend_name(name)](model, batch_size, mastery_dtype)
