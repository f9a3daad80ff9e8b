"""Compiled fixed-shape backends: CPU (TorchScript), CUDA (CUDA graphs), AWS Neuron.

All three reuse ``StepBackend``'s padding/splitting path unchanged and replace only
``compile``: the module is traced or captured once for the fixed (B, ...) shape.
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from stream_kt.backends.base import StepBackend, module_missing, register_backend
from stream_kt.models import KTModel


def cache_dir() -> Path:
    return Path(os.environ.get("STREAM_KT_CACHE", Path.home() / ".cache" / "stream-kt"))


class CpuTracedBackend(StepBackend):
    """TorchScript trace + freeze of the fixed-shape step (measured faster than eager and
    than torch.compile's warm-up cost for a step this small; see README, Performance)."""

    name = "cpu"

    def compile(self, module: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> Callable[..., tuple[torch.Tensor, ...]]:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings about constant shapes: the shape IS constant
            traced = torch.jit.trace(module, example_inputs, check_trace=False)
            return torch.jit.freeze(traced.eval())


class CudaGraphBackend(StepBackend):
    """The step captured once as a CUDA graph for shape B, replayed per batch: one launch
    instead of one per kernel, which is most of the cost of a step this small."""

    name = "cuda"
    device = torch.device("cuda")

    def __init__(self, model: KTModel, batch_size: int) -> None:
        super().__init__(copy.deepcopy(model).to(self.device), batch_size)  # our own copy on the GPU

    def compile(self, module: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> Callable[..., tuple[torch.Tensor, ...]]:
        module = module.to(self.device)
        static_inputs = tuple(t.clone() for t in example_inputs)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.no_grad(), torch.cuda.stream(side):
            for _ in range(3):  # warm up kernels and allocator before capture
                module(*static_inputs)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(graph):
            static_outputs = module(*static_inputs)

        def replay(*inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
            for static, new in zip(static_inputs, inputs):
                static.copy_(new)
            graph.replay()
            return static_outputs

        return replay


def neuron_trace(module: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> Callable[..., tuple[torch.Tensor, ...]]:
    import torch_neuronx  # lazy: only present on Inferentia/Trainium hosts

    return torch_neuronx.trace(module, example_inputs)


class NeuronBackend(StepBackend):
    """AWS Inferentia/Trainium via ``torch_neuronx.trace``: a Neuron graph accepts exactly the
    traced shape, which is why the stream micro-batches into a fixed (B, ...) input."""

    name = "neuron"
    tracer: Callable[[nn.Module, tuple[torch.Tensor, ...]], Callable[..., tuple[torch.Tensor, ...]]] = staticmethod(neuron_trace)

    def compile(self, module: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> Callable[..., tuple[torch.Tensor, ...]]:
        return type(self).tracer(module, example_inputs)


def _cuda_unavailable() -> str | None:
    return None if torch.cuda.is_available() else "backend needs a CUDA GPU and a CUDA build of torch; none found"


register_backend("eager", StepBackend)
register_backend("cpu", CpuTracedBackend)
register_backend("cuda", CudaGraphBackend, _cuda_unavailable)
register_backend("neuron", NeuronBackend, module_missing("torch_neuronx", "torch-neuronx (AWS Neuron SDK)"))
