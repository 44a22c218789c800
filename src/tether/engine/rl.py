"""The online-RL outer loop that PPO and GRPO share.

A recipe builds its models, optimizer and state, and hands :func:`run_online_rl` an :class:`OnlineRun`: the one
function that does an iteration (sample → score → advantages → update, the recipe's own stages) and the state it
checkpoints besides the iteration. The loop does the rest the same way for every online algorithm:

1. resume from the newest checkpoint of the same run (weights, optimizer, the recipe's state, the held-out
   monitor), and only then build the sampler (it starts from the resumed weights);
2. the held-out reference point (iteration 0), then per iteration: the recipe's stages, the sampler's weight sync,
   metrics and the progress bar, the held-out evaluation and its reward-hacking alarm when due;
3. the stops: the alarm (``heldout.stop_on_alarm``), the KL limit (``kl_limit``), a signal (SIGINT / SIGTERM:
   checkpoint at the end of the iteration, then exit with a resume message); ``save_every`` checkpoints and the
   final one.

Every process of a data-parallel run takes the same decisions (the alarm and the signal are agreed with
:meth:`Dist.any`).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from tether.algos.constraint import LagrangeMultiplier
from tether.config import to_dict
from tether.engine.loop import epoch_order
from tether.engine.roles import cost_for, open_roles, reward_for
from tether.engine.runtime import configure_cpu, load_generation_prompts, prepare_run, seed_everything
from tether.errors import ConfigError, TrainingError
from tether.eval.heldout import HeldOutEvaluator
from tether.models.loading import load_tokenizer
from tether.rollout.backends import Generator, timed_sync
from tether.rollout.generation import Rollout, response_logprobs
from tether.tasks.registry import get_task
from tether.utils.checkpoint import checkpoint_root, load_checkpoint, save_checkpoint
from tether.utils.distributed import Dist
from tether.utils.logging import MetricsLogger, console
from tether.utils.resume import resume_point
from tether.utils.signals import StopRequested, graceful_stop, resume_message


def with_task(cfg: Any) -> Any:
    """``cfg`` with the built-in task ``cfg.task`` (:mod:`tether.tasks.registry`) filling what was left empty: the
    prompts (``data.train_file``), the chat format (where ``auto``), the reward (where the task has one to train on,
    a verifier such as ``verify:math``), the held-out gold and prompts, and ``max_new_tokens`` where left at its
    default. ``cfg`` as it is without a task."""
    if not getattr(cfg, "task", ""):
        return cfg
    try:
        task = get_task(cfg.task)
    except ValueError as exc:
        raise ConfigError(f"task: {exc}") from None
    data = replace(cfg.data, train_file=cfg.data.train_file or task.path("prompts_file"),
                   chat_template=task.chat_template if cfg.data.chat_template == "auto" else cfg.data.chat_template)
    heldout = replace(cfg.heldout, gold=cfg.heldout.gold or task.gold,
                      prompts_file=cfg.heldout.prompts_file or task.path("heldout_file"))
    default_tokens = type(cfg).__dataclass_fields__["max_new_tokens"].default
    return replace(cfg, data=data, heldout=heldout, reward=cfg.reward or task.reward,
                   max_new_tokens=task.max_new_tokens if cfg.max_new_tokens == default_tokens else cfg.max_new_tokens)


def registered(lookup: Callable[[str], Any], name: str, key: str) -> Any:
    """``lookup(name)`` from one of the algos registries (policy losses, advantage estimators), an unknown name
    being a config error that names ``key`` and lists the registered names."""
    try:
        return lookup(name)
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None


def prompt_batches(n: int, batch_size: int, seed: int, iteration: int) -> list[int]:
    """The prompts of an iteration: consecutive slices of per-epoch shuffles (a pure function of iteration)."""
    start = iteration * batch_size
    return [epoch_order(n, seed, (start + i) // n)[(start + i) % n] for i in range(batch_size)]


def rollout_logprobs(cfg: Any, model: torch.nn.Module, rollout: Rollout) -> torch.Tensor:
    """``response_logprobs`` at the run's sampling temperature (``cfg.temperature``), laid out as the run's model
    options say (``cfg.model.padding_free``, ``cfg.model.share_prefixes``)."""
    return response_logprobs(model, rollout, cfg.temperature, padding_free=cfg.model.padding_free,
                             share_prefixes=cfg.model.share_prefixes)


def make_heldout(cfg: Any, tokenizer, reward_source, cost_source=None, cost_limit: float | None = None):
    """The held-out evaluator of an RL run (None unless ``heldout.gold`` is set); with ``cost_source`` (a constrained
    run) each point also holds the held-out answers' mean cost, and the record its ``cost_limit``.

    In a multi-process run every process evaluates the same prompts with the same weights, and so reaches the
    same point and the same decisions (keep the best policy, stop on an alarm); the main process alone writes.
    Under FSDP every forward is a collective, and under DDP the other processes would wait for the main one anyway."""
    if not cfg.heldout.gold:
        return None
    return HeldOutEvaluator(cfg.heldout, cfg.data.eval_file, tokenizer, reward_source, cfg.max_new_tokens,
                            cfg.data.max_length, cfg.temperature, cfg.data.chat_template, cost_source=cost_source,
                            cost_limit=cost_limit)


@dataclass
class OnlineSetup:
    """What every online-RL recipe starts from (:func:`start_online_run`)."""

    dist: Dist
    run_dir: Path
    logger: MetricsLogger
    tokenizer: Any
    prompts: list  # the RL prompts, each cut to leave room for max_new_tokens
    roles: Any  # the Ray actors of placed roles (placement.backend=ray), else None
    reward_source: Any


def start_online_run(cfg: Any, batch_field: str) -> OnlineSetup:
    """The common start of an online-RL recipe: ``cfg.<batch_field>`` divisible over the processes, the run
    directory and metric logger, threads and seed, the tokenizer, the prompts, the placed roles and the reward."""
    dist = Dist.current()
    dist.require_divisible(batch_field, getattr(cfg, batch_field))
    run_dir, logger = prepare_run(cfg, cfg.name)
    configure_cpu(cfg.num_threads)
    seed_everything(cfg.seed)
    tokenizer = load_tokenizer(cfg.model.name_or_path, cfg.model)
    prompts = load_generation_prompts(cfg, tokenizer)
    roles = open_roles(cfg)
    return OnlineSetup(dist, run_dir, logger, tokenizer, prompts, roles, reward_for(cfg, tokenizer, roles))


@dataclass
class OnlineRun:
    """What an online-RL recipe hands :func:`run_online_rl`.

    ``iterate(iteration, generator)`` runs the recipe's stages for one iteration and returns its metrics (with
    ``objective/kl``, which ``kl_limit`` watches). ``state()`` is the recipe's state to checkpoint besides the
    iteration (e.g. PPO's KL controller), ``load_state(state)`` restores it from a checkpoint's."""

    modules: torch.nn.Module  # what checkpoints hold: the policy, or the policy and the value model
    policy: torch.nn.Module  # what the held-out evaluation samples from and the sampler is synced with
    optimizer: torch.optim.Optimizer
    make_generator: Callable[[], Generator]  # the sampler, built after the resume (from the resumed weights)
    iterate: Callable[[int, Generator], dict]
    postfix: Callable[[dict], dict]  # the progress bar's numbers
    meta: dict  # recorded with held-out points and the saved model
    description: str  # the progress bar's label
    state: Callable[[], dict] = dict
    load_state: Callable[[dict], None] = lambda state: None
    kl_advice: str = "raise the KL coefficient / lower learning_rate"
    memory_advice: str = "lower the batch sizes"


@dataclass
class OnlineOutcome:
    iterations: int  # iterations done in all (a resumed run counts the ones before the resume)
    history: list[dict] = field(default_factory=list)  # this process's metrics, one dict per iteration run here
    stopped_early: str | None = None
    heldout_state: dict | None = None  # the held-out monitor's state at the end (None without held-out prompts)
    alarms: list[dict] = field(default_factory=list)


@dataclass
class OnlineResult:
    """What ``train_ppo`` and ``train_grpo`` return."""

    model_dir: Path  # the saved policy
    iterations: int
    history: list[dict]  # this process's metrics, one dict per iteration run here
    stopped_early: str | None = None
    alarms: list[dict] = field(default_factory=list)  # the held-out monitor's alarm events


def resume_online(cfg: Any, run: OnlineRun, heldout, logger: MetricsLogger, run_config: dict) -> int:
    """The iteration to start at: 0, or the newest checkpoint's of the same run (weights, optimizer, the recipe's
    state and the held-out monitor restored). Metrics logged after that checkpoint are discarded (logged again)."""
    run_dir = Path(cfg.run_dir)
    ckpt = resume_point(checkpoint_root(run_dir, cfg.name), run_dir / cfg.name, run_config, cfg.resume, cfg.name,
                        "resume", logger)
    start = 0
    if ckpt is not None:
        state = load_checkpoint(ckpt, run.modules, run.optimizer, None)
        start = int(state["iteration"])
        run.load_state(state)
        if heldout is not None and "heldout" in state:
            heldout.monitor.load_state_dict(state["heldout"])
        console.print(f"[green]{cfg.name}: resumed from {ckpt.path} (iteration {start}/{cfg.num_iterations})[/]")
    logger.discard_after(start if ckpt is not None else -1)
    return start


def run_online_rl(cfg: Any, run: OnlineRun, logger: MetricsLogger, tokenizer, ref_model, heldout,
                  roles=None) -> OnlineOutcome:
    """Iterations ``resume point .. cfg.num_iterations`` of ``run`` (see the module docstring); closes ``logger``
    and ``roles`` (the Ray actors of placed roles, or None) at the end, however it ends.

    ``cfg``: the recipe's config (run_dir, name, num_iterations, resume, save_every, kl_limit, heldout)."""
    dist = Dist.current()
    run_dir = Path(cfg.run_dir)
    ckpt_root = checkpoint_root(run_dir, cfg.name)
    run_config = to_dict(cfg)  # (in every checkpoint: a later run resumes only the same run, see tether.utils.resume)
    start = resume_online(cfg, run, heldout, logger, run_config)
    generator = run.make_generator()
    outcome = OnlineOutcome(start)
    bar = tqdm(total=cfg.num_iterations, initial=start, desc=run.description, unit="iter", dynamic_ncols=True,
               disable=not dist.is_main)
    iteration = start
    state: dict = {"iteration": start}

    def save(step: int) -> Path:
        return save_checkpoint(ckpt_root, step, run.modules, run.optimizer, None, {**state, "iteration": step},
                               config=run_config)

    with graceful_stop() as stop:
        try:
            if heldout is not None and start == 0:  # the reference point every later one is compared with
                logger.log(heldout.step(run.policy, ref_model, 0, run_dir, cfg.name, tokenizer, run.meta)[0], 0)
            for iteration in range(start, cfg.num_iterations):
                mark = time.time()
                metrics = run.iterate(iteration, generator)
                metrics.update(timed_sync(generator, run.policy))
                metrics["time/iteration"] = time.time() - mark
                fired = []
                if heldout is not None and heldout.due(iteration + 1, cfg.num_iterations):
                    heldout_metrics, fired = heldout.step(run.policy, ref_model, iteration + 1, run_dir, cfg.name,
                                                          tokenizer, run.meta)
                    metrics.update(heldout_metrics)
                if dist.any(bool(fired)) and not fired:  # (all processes see the same point; this keeps them together)
                    fired = [{"message": "the reward-hacking alarm fired on another process"}]
                logger.log(metrics, iteration + 1)
                outcome.history.append(metrics)
                bar.update(1)
                bar.set_postfix(run.postfix(metrics))
                state = {"iteration": iteration + 1, **run.state()}
                if heldout is not None:
                    state["heldout"] = heldout.monitor.state_dict()
                stopped, setting = stop_reason(cfg, metrics, fired, iteration + 1, run.kl_advice)
                if stopped is not None:
                    outcome.stopped_early = stopped
                    console.print(f"[bold red]stopping:[/] {stopped}" + (f" ({setting})" if setting else ""))
                    iteration += 1
                    break
                if dist.any(stop.requested) and iteration + 1 < cfg.num_iterations:  # a safe point: save, then stop
                    signum = stop.signal or signal.SIGTERM
                    saved = save(iteration + 1)
                    raise StopRequested(signum, resume_message(cfg.name, str(saved), iteration + 1, signum))
                if cfg.save_every and (iteration + 1) % cfg.save_every == 0 and iteration + 1 < cfg.num_iterations:
                    save(iteration + 1)
            else:
                iteration = cfg.num_iterations
            if iteration > start:
                save(iteration)
        except torch.cuda.OutOfMemoryError as exc:  # pragma: no cover - GPU only
            raise TrainingError(f"out of memory: {run.memory_advice} ({exc})") from None
        finally:
            bar.close()
            logger.close()
            if roles is not None:
                roles.close()
    outcome.iterations = iteration
    if heldout is not None:
        outcome.heldout_state = heldout.monitor.state_dict()
        outcome.alarms = heldout.monitor.events
    return outcome


def stop_reason(cfg: Any, metrics: dict, fired: list[dict], iteration: int,
                kl_advice: str) -> tuple[str | None, str | None]:
    """(why the run stops after ``iteration``, the setting that made it stop) or (None, None) when it goes on: the
    reward-hacking alarm fired and ``heldout.stop_on_alarm`` is set, or the mean KL per response exceeded
    ``kl_limit``."""
    if fired and cfg.heldout.stop_on_alarm:
        return f"reward-hacking alarm at iteration {iteration}: {fired[0]['message']}", "heldout.stop_on_alarm=true"
    if metrics["objective/kl"] > cfg.kl_limit:
        return (f"mean KL per response {metrics['objective/kl']:.1f} nats exceeded kl_limit={cfg.kl_limit} at "
                f"iteration {iteration}: the policy is running away from the reference; {kl_advice}"), None
    return None, None


class Constraint:
    """A constrained run's cost source and Lagrange multiplier λ (Safe RLHF, :mod:`tether.algos.constraint`), the
    same in PPO and GRPO: iteration t's scores are the normalised Lagrangian at :attr:`value` λ_t; after it
    :meth:`step` takes the dual step on that iteration's mean cost (``objective/cost``), so a checkpoint written after
    iteration t holds λ_{t+1} (:meth:`state`)."""

    def __init__(self, cfg: Any, source):
        self.cfg, self.source = cfg, source
        self.multiplier = LagrangeMultiplier(cfg.lagrange_init, cfg.cost_limit, cfg.lagrange_lr, cfg.lagrange_max)

    @classmethod
    def of(cls, cfg: Any, tokenizer) -> Constraint | None:
        """The constraint ``cfg`` asks for (``cost``, ``cost_limit``, ``lagrange_*``; checked by
        ``tether.config.validation.validate_constraint``), or None without a cost."""
        source = cost_for(cfg, tokenizer)
        return None if source is None else cls(cfg, source)

    @property
    def value(self) -> float:
        return self.multiplier.value

    def step(self, metrics: dict) -> None:
        """The dual step: the next iteration's λ, from this iteration's mean cost."""
        self.multiplier.update(metrics["objective/cost"])

    def state(self) -> dict:
        return {"lagrange_multiplier": self.multiplier.state_dict()}

    def load_state(self, state: dict) -> None:
        """λ from a checkpoint's recipe state (the λ of the iteration after it). A checkpoint of an unconstrained
        run (``resume=force`` after adding a cost) has none: λ then starts at ``lagrange_init``, as a note says."""
        if "lagrange_multiplier" in state:
            self.multiplier.load_state_dict(state["lagrange_multiplier"])
        else:
            console.print(f"[yellow]{self.cfg.name}: the checkpoint has no Lagrange multiplier (an unconstrained run "
                          f"wrote it); λ starts at lagrange_init={self.cfg.lagrange_init}[/]")

    @staticmethod
    def postfix(metrics: dict) -> dict:
        """The progress bar's cost and λ."""
        return {"cost": f"{metrics['objective/cost']:.3g}", "lam": f"{metrics['objective/lagrange_multiplier']:.3g}"}

    def meta(self) -> dict:
        return {"cost": self.cfg.cost, "cost_limit": self.cfg.cost_limit}
