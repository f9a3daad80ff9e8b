"""The CUDA backend's code path, run on the ``meta`` device: no tensor on the wrong side, one copy each way.

Needs no GPU: ``stream_kt.backends.device_check`` runs the backend with its model on
``meta`` and fails at the first op that puts a CPU tensor into the device's work.
"""

import pytest
import torch

from stream_kt.backends.base import StepBackend
from stream_kt.backends.device_check import DeviceAudit, DeviceLeak, check_backend, check_model_step
from stream_kt.backends.staged import StagedBackend
from tests.models.conftest import every_model, small_model

BATCH = 8
ROW_COUNTS = [1, 5, BATCH, BATCH + 3, 3 * BATCH]  # below, at and above B


def cuda_code_path_on(device: str, model, batch_size: int) -> StepBackend:
    """The CUDA backend with its model on ``device`` and no graph capture (the only part that needs a GPU)."""
    return StagedBackend(model, batch_size, device)


@pytest.fixture(params=every_model())
def model(request):
    return small_model(request.param)


def test_every_model_steps_on_a_device_without_touching_the_cpu(model):
    backend = cuda_code_path_on("meta", model, BATCH)
    seen = check_backend(backend, model, ROW_COUNTS)
    assert [s.device_steps for s in seen] == [
        2 * -(-rows // BATCH) for rows in ROW_COUNTS
    ]  # 2 steps of ceil(rows / B) chunks


def test_every_models_own_step_creates_no_cpu_tensor_on_a_device(model):
    check_model_step(model)


def test_the_batch_crosses_to_the_device_in_one_copy_each_way(model):
    backend = cuda_code_path_on("meta", model, BATCH)
    for seen in check_backend(backend, model, ROW_COUNTS):
        assert seen.host_to_device == seen.device_steps, seen
        assert seen.device_to_host == seen.device_steps, seen


# the audit itself: each kind of leak it exists to catch


def test_the_audit_catches_a_cpu_tensor_mixed_into_a_device_op():
    with pytest.raises(DeviceLeak, match=r"aten\.cat\.default mixes the CPU and meta"):
        with DeviceAudit("meta"):
            torch.cat([torch.zeros(2, device="meta"), torch.zeros(2)])


def test_the_audit_catches_a_cpu_index_tensor_inside_the_step():
    """Indexing a meta (or CUDA) tensor with a CPU index tensor is allowed by torch, but not inside a CUDA graph."""
    bias = torch.zeros(2, 5, device="meta")
    audit = DeviceAudit("meta")
    with audit, pytest.raises(DeviceLeak, match="aten.arange.* creates a CPU tensor inside the device step"):
        audit.wrap(lambda: bias[:, torch.arange(3)])()


def test_the_audit_catches_a_host_copy_inside_the_step():
    audit = DeviceAudit("meta")
    with audit, pytest.raises(DeviceLeak, match="copies meta -> cpu inside the device step"):
        audit.wrap(lambda x: x.cpu())(torch.zeros(3, device="meta"))


def test_a_value_needed_inside_the_step_fails_on_meta():
    """.item() would sync the host with the GPU (and break capture): a meta tensor has no value to give."""
    audit = DeviceAudit("meta")
    with audit, pytest.raises(RuntimeError, match="meta"):
        audit.wrap(lambda x: x.sum().item())(torch.zeros(3, device="meta"))


def test_the_audit_counts_copies_and_lets_host_work_through():
    audit = DeviceAudit("meta")
    with audit:
        torch.cat([torch.zeros(2), torch.ones(2)]).to("meta").cpu()
    assert (audit.host_to_device, audit.device_to_host) == (1, 1)
