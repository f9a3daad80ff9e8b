"""A step whose batch crosses to the device in one copy and comes back in one copy.

``StagedBackend`` is the CUDA backend minus the CUDA graph (``CudaGraphBackend`` adds
only the capture), written for any device, so that its staging runs on the CPU in the
tests and on ``meta`` in the device check.  A fixed-shape call:

1. packs the rows' state and events into one host buffer (pinned on CUDA), the rows
   below B padded with a blank student;
2. copies that buffer to the device in one copy;
3. runs the device step (``self.module``: on CUDA one graph replay), which reads its
   inputs as views of the device buffer and writes p_correct, the new state and
   mastery into one device output buffer;
4. copies that buffer back in one copy, into a fresh host buffer (from torch's caching
   pinned allocator on CUDA), and returns views of it: nothing the caller holds is
   overwritten by the next step.

No Python runs per row; per field, a host copy packs it (step 1).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from stream_kt.backends.base import StepBackend
from stream_kt.models import KTModel, StepOutput

ALIGN_BYTES = 64  # each field starts on a 64-byte boundary: any dtype's view is aligned


@dataclass(frozen=True)
class Field:
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]  # one row's shape
    offset: int  # bytes from the start of the buffer

    def nbytes(self, rows: int) -> int:
        return rows * torch.Size(self.shape).numel() * self.dtype.itemsize


class Layout:
    """Fields of ``rows`` rows each, one after another in one flat byte buffer (each field's rows contiguous)."""

    def __init__(self, rows: int, fields: Sequence[tuple[str, torch.dtype, tuple[int, ...]]]) -> None:
        self.rows = rows
        self.fields: list[Field] = []
        offset = 0
        for name, dtype, shape in fields:
            field = Field(name, dtype, tuple(shape), offset)
            self.fields.append(field)
            offset += -(-field.nbytes(rows) // ALIGN_BYTES) * ALIGN_BYTES
        self.nbytes = max(offset, ALIGN_BYTES)

    def empty(self, device: torch.device | str, pin_memory: bool = False) -> torch.Tensor:
        return torch.empty(self.nbytes, dtype=torch.uint8, device=device, pin_memory=pin_memory)

    def views(self, buffer: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each field as a typed (rows, *shape) view of ``buffer`` (on whatever device it is)."""
        return {
            f.name: buffer[f.offset : f.offset + f.nbytes(self.rows)].view(f.dtype).view(self.rows, *f.shape)
            for f in self.fields
        }


def _state_field(name: str) -> str:
    return f"state.{name}"  # state names (sakt's "items") must not meet the events' names


class StagedBackend(StepBackend):
    """The fixed-shape step on ``device`` with one copy each way (see the module docstring)."""

    name = "staged"

    def __init__(
        self,
        model: KTModel,
        batch_size: int,
        device: torch.device | str = "cpu",
        mastery_dtype: torch.dtype = torch.float32,
        pin_memory: bool = False,
    ) -> None:
        self.device = torch.device(device)
        self.pin_memory = pin_memory
        super().__init__(model, batch_size, mastery_dtype)

    def _build(self) -> Callable[..., Any]:
        """Layouts, host staging, device buffers and the device step (compiled: on CUDA, captured)."""
        model, rows = self.model, self.batch_size
        blank = self._blank
        self.inputs = Layout(
            rows,
            [
                *((_state_field(k), blank[k].dtype, blank[k].shape[1:]) for k in self.state_names),
                ("items", torch.long, (model.input_width,) if model.input_width > 1 else ()),
                ("correct", torch.long, ()),
                ("times", torch.float32, (2,)),
                *((("questions", torch.long, ()),) if model.reads_questions else ()),
            ],
        )
        self.outputs = Layout(
            rows,
            [
                ("p_correct", torch.float32, ()),
                *((_state_field(k), blank[k].dtype, blank[k].shape[1:]) for k in self.state_names),
                ("mastery", self.mastery_dtype, (model.config.num_items,)),
            ],
        )
        # host staging, reused by every call (each call waits for its copies before returning;
        # the lock keeps two threads sharing a cached backend out of each other's staging)
        self._lock = threading.Lock()
        self.host_inputs = self.inputs.empty("cpu", self.pin_memory)
        self._host_in = self.inputs.views(self.host_inputs)
        self._blank_rows(0, rows)
        self._written = 0  # staging rows [_written, B) hold the blank student
        self.device_inputs = self.inputs.empty(self.device)
        self.device_outputs = self.outputs.empty(self.device)
        self.device_inputs.copy_(self.host_inputs)
        device_model = copy.deepcopy(model).to(self.device).eval()  # our own copy on the device
        step_module = device_model.inference_module(self.state_names).eval()
        inputs = list(self.inputs.views(self.device_inputs).values())  # in step_module's positional order
        outputs = list(self.outputs.views(self.device_outputs).values())

        def device_step() -> None:
            """Device buffer in, device buffer out: every tensor here lives on the device."""
            for target, value in zip(outputs, step_module(*inputs)):
                target.copy_(value)  # mastery: cast to mastery_dtype on the device, before the copy back

        with torch.no_grad():
            return self.compile(device_step, ())

    def _blank_rows(self, start: int, stop: int) -> None:
        """Staging rows [start, stop) become the blank student: the padding of a call with fewer than B rows."""
        for k in self.state_names:
            self._host_in[_state_field(k)][start:stop].copy_(
                self._blank[k].expand(stop - start, *self._blank[k].shape[1:])
            )
        for name in ("items", "correct", "times", "questions"):
            if name in self._host_in:
                self._host_in[name][start:stop].zero_()

    def _wait(self) -> None:
        """Block until this device's queued copies are done (CUDA copies from pinned memory are asynchronous)."""

    def _padded(self, state, items, correct, times, questions, start: int, stop: int) -> StepOutput:
        with self._lock:
            return self._staged_step(state, items, correct, times, questions, start, stop)

    def _staged_step(self, state, items, correct, times, questions, start: int, stop: int) -> StepOutput:
        rows = stop - start
        staged = self._host_in
        # 1. pack: each field's rows in one host copy; rows below B keep (or get back) the blank student
        for k in self.state_names:
            staged[_state_field(k)][:rows].copy_(state[k][start:stop])
        staged["items"][:rows].copy_(items[start:stop])
        staged["correct"][:rows].copy_(correct[start:stop])
        staged["times"][:rows].copy_(times[start:stop])
        if questions is not None:
            staged["questions"][:rows].copy_(questions[start:stop])
        if self._written > rows:  # a bigger call left students there
            self._blank_rows(rows, self._written)
        self._written = rows
        # 2. one copy in
        self.device_inputs.copy_(self.host_inputs, non_blocking=self.pin_memory)
        # 3. the device step
        self.module()
        # 4. one copy out, into a buffer of its own: the views returned stay valid after the next step
        host_outputs = self.outputs.empty("cpu", self.pin_memory)
        host_outputs.copy_(self.device_outputs, non_blocking=self.pin_memory)
        self._wait()
        out = self.outputs.views(host_outputs)
        return StepOutput(
            out["p_correct"][:rows], {k: out[_state_field(k)][:rows] for k in self.state_names}, out["mastery"][:rows]
        )
