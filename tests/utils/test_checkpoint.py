import random
import re

import numpy as np
import pytest
import torch

from tether.utils.checkpoint import latest_valid_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint, verify
from tether.utils.state_io import load_state, save_state


def _setup(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    return model, opt, sched


def _step(model, opt, sched):
    loss = model(torch.randn(5, 3)).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()


def test_state_io_roundtrip_without_pickle(tmp_path):
    state = {"a": torch.arange(3), "b": {1: (2.5, "x"), 2: [torch.ones(2), None, True]}, "c": np.arange(2)}
    save_state(state, tmp_path, "s")
    back = load_state(tmp_path, "s")
    assert torch.equal(back["a"], torch.arange(3))
    assert back["b"][1] == (2.5, "x")
    assert torch.equal(back["b"][2][0], torch.ones(2)) and back["b"][2][1] is None and back["b"][2][2] is True
    assert back["c"] == [0, 1]


def test_checkpoint_resume_continues_identically(tmp_path):
    model, opt, sched = _setup()
    for _ in range(2):
        _step(model, opt, sched)
    save_checkpoint(tmp_path, 2, model, opt, sched, {"step": 2})
    random.random(), np.random.rand()
    for _ in range(2):
        _step(model, opt, sched)
    expected = [p.detach().clone() for p in model.parameters()]

    model2, opt2, sched2 = _setup(seed=123)  # different init: everything must come from the checkpoint
    state = load_checkpoint(latest_valid_checkpoint(tmp_path), model2, opt2, sched2)
    assert state == {"step": 2}
    random.random(), np.random.rand()
    for _ in range(2):
        _step(model2, opt2, sched2)
    for a, b in zip(expected, model2.parameters()):
        assert torch.equal(a, b)


def test_corrupt_checkpoint_is_skipped_and_old_ones_pruned(tmp_path):
    model, opt, sched = _setup()
    for step in (1, 2, 3):
        _step(model, opt, sched)
        save_checkpoint(tmp_path, step, model, opt, sched, {"step": step}, keep=2)
    assert [c.step for c in list_checkpoints(tmp_path)] == [2, 3]
    newest = tmp_path / "step-3" / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:-4] + b"\x00\x00\x00\x00")
    assert "sha256" in verify(tmp_path / "step-3")
    messages = []
    ckpt = latest_valid_checkpoint(tmp_path, warn=messages.append)
    assert ckpt.step == 2
    assert "step-3" in messages[0]
    (tmp_path / "step-2" / "manifest.json").unlink()
    assert latest_valid_checkpoint(tmp_path, warn=messages.append) is None


def test_nan_weights_are_never_written(tmp_path):
    model, opt, sched = _setup()
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    try:
        save_checkpoint(tmp_path, 1, model, opt, sched, {"step": 1})
    except FloatingPointError as exc:
        assert "NaN" in str(exc)
    else:
        raise AssertionError("a NaN checkpoint was written")
    assert list_checkpoints(tmp_path) == []


def test_a_checkpoint_of_another_model_is_a_one_line_error_and_changes_nothing(tmp_path):
    from tether.config import ConfigError
    from tether.utils.checkpoint import CheckpointMismatch

    model, opt, sched = _setup()
    save_checkpoint(tmp_path, 1, model, opt, sched, {"step": 1})
    ckpt = latest_valid_checkpoint(tmp_path)
    wider = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Linear(5, 1))  # the same names, other shapes
    deeper = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1), torch.nn.Linear(1, 1))  # one more
    for other, problem in ((wider, r"parameter 0\.(weight|bias) is \[4(, 3)?\] there, \[5(, 3)?\] here"),
                           (deeper, r"it lacks the trainable parameter 2\.weight")):
        before = [p.detach().clone() for p in other.parameters()]
        optimizer = torch.optim.AdamW(other.parameters(), lr=0.1)
        with pytest.raises(CheckpointMismatch) as error:
            load_checkpoint(ckpt, other, optimizer, None)
        assert isinstance(error.value, ConfigError)  # the CLI's one-line error (exit 2), never a traceback
        assert "\n" not in str(error.value) and re.search(problem, str(error.value)), str(error.value)
        assert "resume=never" in str(error.value)
        assert all(torch.equal(a, b) for a, b in zip(before, other.parameters()))


def test_a_checkpoint_records_the_config_of_its_run(tmp_path):
    from tether.utils.checkpoint import checkpoint_config

    model, opt, sched = _setup()
    save_checkpoint(tmp_path, 1, model, opt, sched, {"step": 1}, config={"train": {"learning_rate": 0.1}})
    ckpt = latest_valid_checkpoint(tmp_path)
    assert checkpoint_config(ckpt) == {"train": {"learning_rate": 0.1}} and verify(ckpt.path) is None
    (ckpt.path / "config.json").write_text('{"train": {"learning_rate": 0.5}}')  # the record is sha-verified too
    assert "config.json" in verify(ckpt.path)
