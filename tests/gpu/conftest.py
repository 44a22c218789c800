"""Fixtures of the GPU tests."""
import pytest
import torch

from tether.utils.distributed import Dist


@pytest.fixture
def on(monkeypatch):
    """``on("cuda")`` / ``on("cpu")``: the recipes that follow compute on that device (TETHER_DEVICE)."""
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 matmuls in fp32, to compare with the CPU
    torch.backends.cudnn.allow_tf32 = False

    def use(device):
        monkeypatch.setenv("TETHER_DEVICE", device)
        Dist._current = None  # resolved again on next use

    yield use
    Dist._current = None
