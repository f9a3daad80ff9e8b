"""Compiled fixed-shape backends: CPU (TorchScript), CUDA (CUDA graphs), AWS Neuron.

CPU and Neuron reuse ``StepBackend``'s padding/splitting path unchanged and replace only
``compile``: the module is traced once for the fixed (B, ...) shape.  CUDA stages the
batch through pinned memory (``StagedBackend``) and captures its device step as a graph.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch

from stream_kt.backends.base import StepBackend, module_missing, register_backend
from stream_kt.backends.staged import StagedBackend
from stream_kt.models import KTModel


class CpuTracedBackend(StepBackend):
    """TorchScript trace + freeze of the fixed-shape step (measured faster than eager and
    than torch.compile's warm-up cost for a step this small; see docs/performance.md).

    A module that can pack its weights for oneDNN (``pack_for_cpu``, DKT's) runs eagerly
    with them instead: packed weights cannot be traced, and the packed eager step
    measured faster than the traced one."""

    name = "cpu"

    def compile(self, module: Callable[..., Any], example_inputs: tuple[torch.Tensor, ...]) -> Callable[..., Any]:
        pack = getattr(module, "pack_for_cpu", None)
        if pack is not None and pack(self.batch_size):
            return module
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings about constant shapes: the shape IS constant
            traced = torch.jit.trace(module, example_inputs, check_trace=False)
            return torch.jit.freeze(traced.eval())


class CudaGraphBackend(StagedBackend):
    """``StagedBackend`` on the GPU, its device step captured once as a CUDA graph for shape B
    and replayed per call: one launch instead of one per kernel, which is most of the cost
    of a step this small.  The batch crosses in one copy each way from pinned memory.

    ``graphs=False`` runs the same device step uncaptured (the benchmark's comparison).
    """

    name = "cuda"

    def __init__(
        self, model: KTModel, batch_size: int, mastery_dtype: torch.dtype = torch.float32, graphs: bool = True
    ) -> None:
        self.graphs = graphs
        super().__init__(
            model, batch_size, torch.device("cuda", torch.cuda.current_device()), mastery_dtype, pin_memory=True
        )

    def compile(self, step: Callable[..., Any], example_inputs: tuple[torch.Tensor, ...]) -> Callable[..., Any]:
        if not self.graphs:
            return step
        # Warm up and capture on one side stream of this backend's (torch's stream pool),
        # not on torch's default capture stream, which every graph shares: cuBLAS keeps a
        # workspace per stream, so capture allocates none, and releasing another graph
        # captured on the same stream could free the workspace this one replays
        # (pytorch/pytorch#193402).  With a pool of streams that is rarer, not impossible.
        self.capture_stream = torch.cuda.Stream(self.device)
        self.capture_stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.capture_stream):
            for _ in range(3):  # kernels, cuBLAS handle and workspace, allocator
                step(*example_inputs)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, stream=self.capture_stream):
            step(*example_inputs)
        torch.cuda.current_stream(self.device).wait_stream(self.capture_stream)
        return self.graph.replay

    def _wait(self) -> None:
        torch.cuda.current_stream(self.device).synchronize()


def neuron_trace(module: Any, example_inputs: tuple[torch.Tensor, ...]) -> Callable[..., Any]:
    import torch_neuronx  # lazy: only present on Inferentia/Trainium hosts

    return torch_neuronx.trace(module, example_inputs)


class NeuronBackend(StepBackend):
    """AWS Inferentia/Trainium via ``torch_neuronx.trace``: a Neuron graph accepts exactly the
    traced shape, which is why the stream micro-batches into a fixed (B, ...) input."""

    name = "neuron"
    tracer: Callable[[Any, tuple[torch.Tensor, ...]], Callable[..., Any]] = staticmethod(neuron_trace)

    def compile(self, module: Callable[..., Any], example_inputs: tuple[torch.Tensor, ...]) -> Callable[..., Any]:
        return type(self).tracer(module, example_inputs)


def _cuda_unavailable() -> str | None:
    return None if torch.cuda.is_available() else "backend needs a CUDA GPU and a CUDA build of torch; none found"


register_backend("eager", StepBackend)
register_backend("cpu", CpuTracedBackend)
register_backend("cuda", CudaGraphBackend, _cuda_unavailable)
register_backend("neuron", NeuronBackend, module_missing("torch_neuronx", "torch-neuronx (AWS Neuron SDK)"))
