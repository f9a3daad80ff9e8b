"""A CPU-only check that a backend keeps host and device apart: what a GPU run would catch, without a GPU.

The backend runs with its model on the ``meta`` device (tensors with shapes and dtypes
but no data, available in every torch build) under ``DeviceAudit``, a
``TorchDispatchMode`` that sees every aten op and fails at the first op that

1. mixes CPU and device tensors in one op (other than an explicit copy between them):
   on CUDA, ``Expected all tensors to be on the same device``;
2. creates or reads a CPU tensor inside the fixed-shape device step, or copies between
   host and device there: CUDA graph capture refuses the copy, and even where a CUDA
   op accepts a CPU index tensor it is a hidden host-to-device copy per call;
3. needs a value inside the device step (``.item()``, a data-dependent shape): meta
   tensors have none, so such an op raises, as it would break a CUDA graph.

The device step is ``backend.module``, what a compiled backend captures or traces;
everything outside it is the host side of ``step`` (staging, padding, splitting).  The
audit also counts the copies between host and device per device step, and the check
holds the host contract: ``initial_state`` and ``step``'s outputs live on the CPU.

Copies from ``meta`` to the CPU have no data to copy: the audit hands back zeros, so
the run is about devices, shapes and copies, never values (parity tests own values).
"""

from __future__ import annotations

import copy
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from stream_kt.backends.base import StepBackend
from stream_kt.models import KTModel

aten = torch.ops.aten
COPIES = (aten._to_copy.default, aten.copy_.default)
_SOURCE_ROOT = Path(__file__).resolve().parents[1]  # the stream_kt package
_HERE = Path(__file__).resolve()


class DeviceLeak(AssertionError):
    """A tensor on the wrong device: the op, the devices and the line of stream-kt that ran it."""


def _culprit() -> str:
    """The innermost stream-kt source line on the stack (outside this module): where the op came from."""
    for frame in reversed(traceback.extract_stack()):
        path = Path(frame.filename).resolve()
        if path != _HERE and _SOURCE_ROOT in path.parents:
            return (
                f"{path.relative_to(_SOURCE_ROOT.parent)}:{frame.lineno} in {frame.name}: {(frame.line or '').strip()}"
            )
    return "(no stream-kt frame on the stack)"


def _describe(tensors: Sequence[torch.Tensor]) -> str:
    return ", ".join(f"{t.device.type} {tuple(t.shape)} {str(t.dtype).removeprefix('torch.')}" for t in tensors)


class DeviceAudit(TorchDispatchMode):
    """Fails at the first op that lets the CPU into the device's work (see the module docstring)."""

    def __init__(self, device: torch.device | str) -> None:
        super().__init__()
        self.device = torch.device(device)
        self.in_step = False
        self.device_steps = 0
        self.host_to_device = 0  # copies seen outside the device step
        self.device_to_host = 0

    def wrap(self, step: Callable[..., Any]) -> Callable[..., Any]:
        """``step`` (the backend's device step), marked as inside the step while it runs."""

        def audited(*inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
            self.in_step, self.device_steps = True, self.device_steps + 1
            try:
                return step(*inputs)
            finally:
                self.in_step = False

        return audited

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in COPIES:
            source, target = self._copy_devices(func, args, kwargs)
            if source.type != target.type:
                return self._transfer(func, args, kwargs, source, target)
        tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        if self.in_step:
            self._no_cpu(func, "reads", tensors)
        elif {t.device.type for t in tensors} >= {"cpu", self.device.type}:
            raise DeviceLeak(f"{func} mixes the CPU and {self.device.type} ({_describe(tensors)}) at {_culprit()}")
        out = func(*args, **kwargs)
        if self.in_step:
            self._no_cpu(func, "creates", [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)])
        return out

    def _no_cpu(self, func, verb: str, tensors: list[torch.Tensor]) -> None:
        on_cpu = [t for t in tensors if t.device.type == "cpu"]
        if on_cpu:
            raise DeviceLeak(f"{func} {verb} a CPU tensor inside the device step ({_describe(on_cpu)}) at {_culprit()}")

    @staticmethod
    def _copy_devices(func, args, kwargs) -> tuple[torch.device, torch.device]:
        if func is aten.copy_.default:
            return args[1].device, args[0].device  # copy_(target, source)
        source = args[0].device
        return source, kwargs.get("device") or source

    def _transfer(self, func, args, kwargs, source: torch.device, target: torch.device):
        if self.in_step:
            raise DeviceLeak(f"{func} copies {source.type} -> {target.type} inside the device step at {_culprit()}")
        if target.type == "cpu":
            self.device_to_host += 1
        else:
            self.host_to_device += 1
        if source.type != "meta":
            return func(*args, **kwargs)
        # meta holds no data: the host receives zeros of the right shape and dtype
        if func is aten.copy_.default:
            return args[0].zero_()
        return torch.zeros(args[0].shape, dtype=kwargs.get("dtype") or args[0].dtype)


@dataclass
class DeviceCheck:
    """What one audited run saw, per row count."""

    rows: int
    device_steps: int  # fixed-shape (B, ...) steps run
    host_to_device: int  # copies
    device_to_host: int


def _host_only(what: str, tensors: dict[str, torch.Tensor]) -> None:
    elsewhere = {k: str(v.device) for k, v in tensors.items() if v.device.type != "cpu"}
    if elsewhere:
        raise DeviceLeak(f"{what} must live on the CPU (the stream stores host rows), got {elsewhere}")


def check_backend(
    backend: StepBackend, model: KTModel, row_counts: Sequence[int], steps: int = 2, seed: int = 0
) -> list[DeviceCheck]:
    """Step ``backend`` (its model on its ``device``, e.g. ``meta``) ``steps`` times at each row count
    under ``DeviceAudit``.

    ``model`` is the host model the backend was built from: the first state is its
    ``initial_state``, host rows as the stream passes them.  Raises ``DeviceLeak`` at the
    first tensor on the wrong side; returns the copies seen.
    """
    rng = np.random.default_rng(seed)
    audit = DeviceAudit(backend.device)
    backend.module = audit.wrap(backend.module)
    results = []
    for rows in row_counts:
        state = model.initial_state(rows)
        audit.device_steps = audit.host_to_device = audit.device_to_host = 0
        for _ in range(steps):
            items = torch.from_numpy(rng.integers(0, model.config.num_items, rows))
            correct = torch.from_numpy(rng.integers(0, 2, rows))
            times = torch.from_numpy(rng.uniform(0, 60, (rows, 2)).astype(np.float32))
            with audit:
                out = backend.step(state, items, correct, times)
            _host_only("step's new state", out.state)
            _host_only("step's p_correct and mastery", {"p_correct": out.p_correct, "mastery": out.mastery})
            if (
                out.p_correct.shape != (rows,)
                or out.mastery.shape[0] != rows
                or any(v.shape[0] != rows for v in out.state.values())
            ):
                raise AssertionError(
                    f"step on {rows} rows returned p_correct {tuple(out.p_correct.shape)}, "
                    f"mastery {tuple(out.mastery.shape)}"
                )
            state = out.state
        results.append(DeviceCheck(rows, audit.device_steps, audit.host_to_device, audit.device_to_host))
    _host_only("the backend's initial_state", backend.initial_state(max(row_counts)))
    return results


def check_model_step(model: KTModel, rows: int = 3, device: str = "meta") -> None:
    """``model.step`` itself on ``device`` (a copy), with and without ``times``: no CPU tensor inside it."""
    on_device = copy.deepcopy(model).to(device)
    audit = DeviceAudit(device)
    step = audit.wrap(on_device.step)
    items = torch.zeros(rows, dtype=torch.long, device=device)
    for times in (None, torch.zeros(rows, 2, device=device)):
        state = {k: v.to(device) for k, v in model.initial_state(rows).items()}
        with audit, torch.no_grad():
            step(state, items, items, *(() if times is None else (times,)))
