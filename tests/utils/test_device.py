"""Which device a process computes on (TETHER_DEVICE), and inputs following the model's device."""

import pytest
import torch

from tether.utils import device as device_mod
from tether.utils.device import DeviceError, model_device, resolve_device, to_device


@pytest.fixture
def gpus(monkeypatch):
    """Pretend torch sees ``n`` CUDA devices (no GPU is touched: resolve_device only asks how many there are)."""

    def set_count(n):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)

    return set_count


def test_auto_is_the_cpu_without_cuda(gpus):
    gpus(0)
    assert resolve_device({}) == torch.device("cpu")
    assert resolve_device({"TETHER_DEVICE": "auto"}) == torch.device("cpu")
    assert resolve_device({"TETHER_DEVICE": "  "}) == torch.device("cpu")


def test_auto_is_the_launched_process_s_own_gpu(gpus):
    gpus(4)
    assert resolve_device({}) == torch.device("cuda", 0)
    assert resolve_device({"LOCAL_RANK": "3"}) == torch.device("cuda", 3)
    assert resolve_device({"TETHER_DEVICE": "cuda", "LOCAL_RANK": "2"}) == torch.device("cuda", 2)
    assert resolve_device({"OMPI_COMM_WORLD_LOCAL_RANK": "1"}) == torch.device("cuda", 1)
    # an explicit index wins over the launcher's local rank
    assert resolve_device({"TETHER_DEVICE": "cuda:1", "LOCAL_RANK": "3"}) == torch.device("cuda", 1)
    assert resolve_device({"TETHER_DEVICE": "CPU"}) == torch.device("cpu")


def test_cpu_flag_of_accelerate_keeps_processes_on_the_cpu(gpus):
    gpus(2)
    assert resolve_device({"ACCELERATE_USE_CPU": "true"}) == torch.device("cpu")
    assert resolve_device({"ACCELERATE_USE_CPU": "True", "TETHER_DEVICE": "cpu"}) == torch.device("cpu")
    with pytest.raises(DeviceError, match="contradicts accelerate's --cpu"):
        resolve_device({"ACCELERATE_USE_CPU": "true", "TETHER_DEVICE": "cuda:0"})


def test_devices_that_cannot_be_used_are_refused_clearly(gpus, monkeypatch):
    gpus(0)
    with pytest.raises(DeviceError, match="torch sees no CUDA device.*TETHER_DEVICE=cpu"):
        resolve_device({"TETHER_DEVICE": "cuda"})
    gpus(2)
    with pytest.raises(DeviceError, match=r"would use cuda:2, but torch sees 2 CUDA device\(s\) \(LOCAL_RANK=2\)"):
        resolve_device({"LOCAL_RANK": "2"})
    with pytest.raises(DeviceError, match=r"cuda:5: this process would use cuda:5, but torch sees 2"):
        resolve_device({"TETHER_DEVICE": "cuda:5"})
    with pytest.raises(DeviceError, match="gpu0: not a device; use auto, cpu, cuda"):
        resolve_device({"TETHER_DEVICE": "gpu0"})
    with pytest.raises(DeviceError, match="meta: tether runs on cpu, cuda or mps"):
        resolve_device({"TETHER_DEVICE": "meta"})
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="MPS backend is not available"):
        resolve_device({"TETHER_DEVICE": "mps"})
    assert issubclass(DeviceError, device_mod.ConfigError)  # the CLI reports it as a configuration error


def test_mps_only_by_name(gpus, monkeypatch):
    gpus(0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device({}) == torch.device("cpu")
    assert resolve_device({"TETHER_DEVICE": "mps"}) == torch.device("mps")


def test_to_device_moves_tensors_in_nested_dicts_and_keeps_the_rest():
    meta = torch.device("meta")
    batch = {"input_ids": torch.ones(2, 3, dtype=torch.long), "n": 4, "names": ["a", "b"],
             "mismatched": {"input_ids": torch.zeros(1, 2), "flag": True}}
    moved = to_device(batch, meta)
    assert moved["input_ids"].device == meta and moved["input_ids"].dtype == torch.long
    assert moved["mismatched"]["input_ids"].device == meta and moved["mismatched"]["flag"] is True
    assert moved["n"] == 4 and moved["names"] == ["a", "b"]
    assert batch["input_ids"].device == torch.device("cpu")  # the caller's batch is left as it was
    assert to_device(torch.zeros(2), meta).device == meta
    assert to_device([torch.zeros(1)], meta)[0].device == torch.device("cpu")  # only tensors and dicts


def test_model_device_is_the_first_parameter_s():
    assert model_device(torch.nn.Linear(2, 2)) == torch.device("cpu")
    assert model_device(torch.nn.Linear(2, 2, device="meta")) == torch.device("meta")
    assert model_device(torch.nn.ReLU()) == torch.device("cpu")  # no parameters

