import json
import os

import pytest

# The default suite computes on the CPU on every machine: its expected values are worked out for fp32 CPU kernels.
# tests/gpu/ runs the recipes on a CUDA device when there is one.
os.environ.setdefault("TETHER_DEVICE", "cpu")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Parallel test workers (pytest -n 2): one compute thread each, also for the CLI subprocesses they start,
    # so the workers do not oversubscribe the cores.
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tokenizer():
    from tether.models.embedded import load_embedded_tokenizer

    return load_embedded_tokenizer()


@pytest.fixture
def write_jsonl(tmp_path):
    def write(name, rows):
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return path

    return write

