import math

import pytest
import torch

from tether.config import TrainConfig
from tether.engine.loop import TrainingError, adamw, epoch_order, lr_multiplier, micro_batches, plan_total_steps, run_training
from tether.utils.logging import MetricsLogger, read_metrics


def test_lr_schedule_by_hand():
    # 10 steps, 2 warmup: 0.5, 1.0, then cosine from 1 to 0 over 8 steps
    assert lr_multiplier(0, 10, 2, "cosine") == 0.5
    assert lr_multiplier(1, 10, 2, "cosine") == 1.0
    assert lr_multiplier(2, 10, 2, "cosine") == 1.0
    assert lr_multiplier(6, 10, 2, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_multiplier(6, 10, 2, "linear") == pytest.approx(0.5)
    assert lr_multiplier(10, 10, 2, "linear") == 0.0
    assert lr_multiplier(7, 10, 2, "constant") == 1.0


def test_adamw_is_fused_on_cpu_and_takes_adams_steps():
    """The fused kernel (one pass per parameter) is used on CPU; three steps of it equal AdamW's textbook update."""
    torch.manual_seed(0)
    start = torch.randn(5, 3)
    grads = [torch.randn(5, 3) for _ in range(3)]
    fused, plain = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    opt = adamw([fused], lr=0.1, betas=(0.9, 0.99), weight_decay=0.1)
    assert opt.defaults["fused"] is True
    m = v = torch.zeros_like(start)
    for t, g in enumerate(grads, start=1):
        fused.grad = g.clone()
        opt.step()
        with torch.no_grad():  # decoupled weight decay, then the bias-corrected Adam step
            plain.mul_(1 - 0.1 * 0.1)
            m, v = 0.9 * m + 0.1 * g, 0.99 * v + 0.01 * g * g
            plain -= 0.1 * (m / (1 - 0.9 ** t)) / ((v / (1 - 0.99 ** t)).sqrt() + 1e-8)
    assert torch.allclose(fused, plain, atol=1e-6)
    assert (fused - start).abs().min() > 1e-3  # the steps did move every weight


def test_micro_batches_cover_each_epoch_and_resume_midway():
    stream = micro_batches(10, 4, seed=3)
    first_epoch = [next(stream) for _ in range(3)]
    assert [len(b) for b in first_epoch] == [4, 4, 2]
    assert sorted(i for b in first_epoch for i in b) == list(range(10))
    assert sum(first_epoch, []) == epoch_order(10, 3, 0)
    later = [next(stream) for _ in range(4)]
    resumed = micro_batches(10, 4, seed=3, start=3)
    assert [next(resumed) for _ in range(4)] == later
    assert epoch_order(10, 3, 1) != epoch_order(10, 3, 0)


def test_total_steps():
    assert plan_total_steps(100, TrainConfig(batch_size=8, grad_accum_steps=2, num_epochs=1.0)) == 7
    assert plan_total_steps(100, TrainConfig(batch_size=8, num_epochs=0.5)) == 7
    assert plan_total_steps(100, TrainConfig(max_steps=3)) == 3


def _regression(n=12):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(n, generator=g)
    return x, y


def _train(tmp_path, cfg, stage="reg", model=None, crash_after_batches=None):
    x, y = _regression()
    torch.manual_seed(0)
    model = model or torch.nn.Linear(3, 1, bias=False)
    made = []

    def make_batch(idx):
        if crash_after_batches is not None and len(made) == crash_after_batches:
            raise KeyboardInterrupt  # the process dies mid-run
        made.append(idx)
        return {"x": x[idx], "y": y[idx]}

    def loss_fn(m, batch, num_items):
        errors = (m(batch["x"]).squeeze(-1) - batch["y"]) ** 2
        return errors.sum() / num_items, {"mse": errors.mean().detach()}

    logger = MetricsLogger(tmp_path, stage)
    result = run_training(model=model, n_examples=len(x), make_batch=make_batch,
                          count_items=lambda b: len(b["y"]), loss_fn=loss_fn, cfg=cfg, run_dir=tmp_path,
                          stage=stage, logger=logger)
    return model, result


def test_loss_falls(tmp_path):
    cfg = TrainConfig(learning_rate=0.1, max_steps=30, batch_size=4, warmup_ratio=0.0, lr_scheduler="constant")
    _, result = _train(tmp_path, cfg)
    rows = read_metrics(tmp_path, "reg")
    assert len(rows) == 30
    assert rows[-1]["loss"] < 0.1 * rows[0]["loss"]
    assert result.steps == 30


def test_gradient_accumulation_equals_big_batch(tmp_path):
    # 12 examples: one step of batch 12 == one step of micro-batches of 5, 5 and 2 (same examples, same order).
    # Unequal micro-batches: dividing each by its own size instead of the step's total would change the gradient.
    common = dict(learning_rate=0.05, max_steps=1, warmup_ratio=0.0, lr_scheduler="constant", max_grad_norm=0.0)
    m_big, _ = _train(tmp_path / "a", TrainConfig(batch_size=12, **common))
    m_small, _ = _train(tmp_path / "b", TrainConfig(batch_size=5, grad_accum_steps=3, **common))
    (big,) = read_metrics(tmp_path / "a", "reg")
    (small,) = read_metrics(tmp_path / "b", "reg")
    assert small["train/grad_norm"] == pytest.approx(big["train/grad_norm"], rel=1e-6)
    assert small["loss"] == pytest.approx(big["loss"], rel=1e-6)
    assert torch.allclose(m_big.weight, m_small.weight, atol=1e-7)


def test_resume_reproduces_uninterrupted_run(tmp_path):
    cfg = dict(learning_rate=0.05, batch_size=4, warmup_ratio=0.2, save_every=3)
    full, _ = _train(tmp_path / "full", TrainConfig(max_steps=8, **cfg))
    with pytest.raises(KeyboardInterrupt):  # dies during step 5, after the checkpoint at step 3
        _train(tmp_path / "cut", TrainConfig(max_steps=8, **cfg), crash_after_batches=4)
    # the re-run resumes from step 3 and continues to 8 with the same schedule and data order
    resumed, result = _train(tmp_path / "cut", TrainConfig(max_steps=8, **cfg))
    assert result.resumed_from == 3
    fresh_start, _ = _train(tmp_path / "other", TrainConfig(max_steps=8, **{**cfg, "seed": 1}))
    assert not torch.allclose(full.weight, fresh_start.weight, atol=1e-4)  # the comparison can fail
    assert torch.allclose(full.weight, resumed.weight, atol=1e-7)


def test_nonfinite_loss_stops_the_run(tmp_path):
    def loss_fn(m, batch, num_items):
        return m(batch["x"]).sum() * float("nan"), {}

    model = torch.nn.Linear(3, 1)
    x = torch.randn(8, 3)
    with pytest.raises(TrainingError, match="non-finite"):
        run_training(model=model, n_examples=8, make_batch=lambda idx: {"x": x[idx]}, count_items=lambda b: 1,
                     loss_fn=loss_fn, cfg=TrainConfig(max_steps=10, batch_size=4), run_dir=tmp_path, stage="nan",
                     logger=MetricsLogger(tmp_path, "nan"))
    assert torch.isfinite(model.weight).all()


def test_planned_indices_are_exactly_the_visited_ones():
    cfg = TrainConfig(max_steps=3, batch_size=4, grad_accum_steps=2)
    stream = micro_batches(100, 4, seed=cfg.seed)
    visited = sorted({i for _ in range(6) for i in next(stream)})
    from tether.engine.loop import planned_indices

    assert planned_indices(100, cfg) == visited and len(visited) == 24
    assert planned_indices(10, cfg) == list(range(10))  # covers the data twice over: all of it


def test_a_single_nonfinite_step_is_skipped_and_counted(tmp_path):
    x = torch.randn(8, 3)
    calls = []

    def loss_fn(m, batch, num_items):
        calls.append(1)
        scale = float("nan") if len(calls) == 2 else 1.0  # the second step's loss is NaN
        return m(batch["x"]).pow(2).mean() * scale, {}

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    result = run_training(model=model, n_examples=8, make_batch=lambda idx: {"x": x[idx]}, count_items=lambda b: 1,
                          loss_fn=loss_fn, cfg=TrainConfig(max_steps=4, batch_size=4), run_dir=tmp_path, stage="s",
                          logger=MetricsLogger(tmp_path, "s"))
    rows = read_metrics(tmp_path, "s")
    assert result.steps == 4 and [r["train/skipped_nonfinite"] for r in rows] == [0, 1, 1, 1]
    assert torch.isfinite(model.weight).all()
