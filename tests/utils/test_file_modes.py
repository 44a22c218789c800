"""Files and directories tether writes get the permissions the umask gives (as `open` and `mkdir` do), not the
private 0o600 / 0o700 of `mkstemp` / `mkdtemp` that the atomic writes start from; the labeling app's tokens file
stays 0o600 whatever the umask."""

import contextlib
import os
import stat

import pytest

from tests.helpers import EXAMPLES, tiny_model_config
from tether.config import DataConfig, ReportConfig, SFTConfig, TrainConfig

DATA = EXAMPLES / "data"


@contextlib.contextmanager
def umask(mask):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_outputs_respect_the_umask(mask, tmp_path):
    from tether.eval.report import write_report
    from tether.recipes.sft import train_sft

    run = tmp_path / "run"
    cfg = SFTConfig(run_dir=str(run), model=tiny_model_config(),
                    data=DataConfig(train_file=str(DATA / "sft.jsonl"), max_length=128, eval_fraction=0.0),
                    train=TrainConfig(learning_rate=1e-3, max_steps=2, batch_size=4, save_every=1, report_to=[]))
    with umask(mask):
        train_sft(cfg)
        cfg.train.max_steps = 3
        train_sft(cfg)  # resumed: metrics.jsonl is rewritten (the records after the checkpoint dropped) and appended
        write_report(ReportConfig(run_dir=str(run)))
    file_mode, dir_mode = 0o666 & ~mask, 0o777 & ~mask
    files = [run / "sft" / "model.safetensors", run / "sft" / "tether.json", run / "sft" / "config.json",
             run / "config.yaml", run / "report.html", run / "metrics.jsonl"]
    step = run / "checkpoints" / "sft" / "step-3"
    files += sorted(p for p in step.iterdir())
    assert {str(p): oct(_mode(p)) for p in files} == {str(p): oct(file_mode) for p in files}
    folders = [run, run / "sft", run / "checkpoints" / "sft", step]
    assert {str(p): oct(_mode(p)) for p in folders} == {str(p): oct(dir_mode) for p in folders}


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_atomic_write_text_gives_a_new_file_the_umask_mode_and_never_widens_a_private_one(mask, tmp_path):
    from tether.utils.files import atomic_write_text

    with umask(mask):
        atomic_write_text(tmp_path / "new.json", "{}\n")
        private = tmp_path / "private.json"
        private.write_text("secret\n")
        private.chmod(0o600)
        atomic_write_text(private, "still secret\n")
        atomic_write_text(tmp_path / "given.json", "{}\n", mode=0o640)
    assert _mode(tmp_path / "new.json") == 0o666 & ~mask
    assert _mode(private) == 0o600 and private.read_text() == "still secret\n"
    assert _mode(tmp_path / "given.json") == 0o640
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_the_labeling_tokens_file_stays_private_under_a_permissive_umask(tmp_path):
    from tether.recipes.label import _save_tokens

    path = tmp_path / "labels.tokens.json"
    with umask(0o022):
        _save_tokens(path, "admin-token", {"alice": "a-token"})
        assert _mode(path) == 0o600
        _save_tokens(path, None, {"bob": "b-token"})  # rewritten with a new token, the others kept
    assert _mode(path) == 0o600 and "a-token" in path.read_text() and "b-token" in path.read_text()
