"""The training loop: every method (GRPO, LUFFY, AMPO, Guide, TGPO, RKL, PPO) runs through
:meth:`Trainer.train_step`, and a method is a config: a guidance ladder, batch filters, an advantage estimator
with add-ons, per-kind token surrogates and regularizers, each chosen by name from a registry. The loop holds
no method logic: each line of a step is a call into the module that owns it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from guidedrl.algorithms.advantages import estimate_advantages
from guidedrl.batch import RolloutBatch, filter_batch, reward_rollouts
from guidedrl.config import RolloutConfig, TrainConfig
from guidedrl.data import encode_prompts, load_rows, validate_rows
from guidedrl.eval.evaluate import evaluate
from guidedrl.guidance.base import GuidanceContext
from guidedrl.guidance.build import build_guidance
from guidedrl.registry import ENGINES
from guidedrl.rewards import Reward, RewardState
from guidedrl.rollout.engine import RolloutEngine, SamplingParams
from guidedrl.seeding import derive_seed
from guidedrl.teachers.model import TokenizerMismatchError
from guidedrl.trainer.checkpoint import checkpoints, load_state, save_checkpoint
from guidedrl.trainer.logger import MetricsLogger, PhaseTimer
from guidedrl.trainer.optim import build_optimizer
from guidedrl.trainer.paths import RunPaths
from guidedrl.trainer.sampler import PromptSampler
from guidedrl.trainer.signals import StepSignals
from guidedrl.trainer.update import PolicyUpdate
from guidedrl.yaml_config import ConfigError, dump_config

EngineFactory = Callable[[PreTrainedModel, PreTrainedTokenizerBase, RolloutConfig], RolloutEngine]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class Trainer:
    """Holds the run's state (policy, optimizer, data position) and steps it."""

    def __init__(self, cfg: TrainConfig, resume: bool = False, console: Console | None = None,
                 engine: EngineFactory | None = None) -> None:
        self.cfg, self.console = cfg, console or Console()
        self.paths = RunPaths.resolve(cfg)
        self.out = Path(cfg.output_dir)
        torch.manual_seed(cfg.seed)
        last = checkpoints(self.out / "checkpoints")[-1] if resume and checkpoints(self.out / "checkpoints") else None
        weights, dtype = last or self.paths.model, DTYPES[cfg.dtype]
        self.tokenizer = AutoTokenizer.from_pretrained(weights)
        self.policy = AutoModelForCausalLM.from_pretrained(weights, dtype=dtype)
        self.engine = (engine or ENGINES.get(cfg.rollout.engine))(self.policy, self.tokenizer, cfg.rollout)
        self.rows = validate_rows(load_rows(self.paths.dataset, cfg.dataset_split), str(self.paths.dataset))
        self.prompt_ids = encode_prompts(self.tokenizer, [r["prompt"] for r in self.rows])
        self.eval_sets = {name: validate_rows(load_rows(path), str(path))[:cfg.eval.max_problems]
                          for name, path in self.paths.eval_sets.items()}
        self.reward = Reward(cfg.rewards)
        self.optimizer, self.scheduler = build_optimizer(self.policy, cfg.optim, cfg.steps)
        self.sampler = PromptSampler(len(self.rows), cfg.rollout.prompts_per_step, cfg.seed)
        self.guidance = build_guidance(cfg.guidance, GuidanceContext(
            policy=self.policy, tokenizer=self.tokenizer, engine=self.engine, reward=self.reward,
            correct_threshold=cfg.correct_threshold, group_size=cfg.rollout.group_size,
            temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p,
            max_new_tokens=cfg.rollout.max_new_tokens, seed=cfg.seed))
        try:
            self.signals = StepSignals(cfg, self.paths.model, self.paths.teacher, self.tokenizer, dtype)
        except TokenizerMismatchError as err:
            raise ConfigError(f"teacher_signal.path: {err}") from None
        except ValueError as err:
            raise ConfigError(f"teacher_signal: {err}") from None
        self.critic = self.signals.critic
        self.update = PolicyUpdate(self.policy, self.optimizer, cfg)
        self.step = 0
        self.last_batch: RolloutBatch | None = None  # the final batch of the latest step, advantages included
        self.logger = MetricsLogger(self.out)
        if last is not None:
            self.restore(last)
        else:
            dump_config(cfg, self.out / "config.yaml")

    # ---- one step -------------------------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        """sample → generate → reward → guidance ladder → batch filters → signals → advantages → update."""
        cfg, index, timer = self.cfg, self.step, PhaseTimer()
        ids = self.sampler.next_batch()
        rows = [self.rows[i] for i in ids]
        with timer("rollout"):
            rollouts = self.engine.generate([self.prompt_ids[i] for i in ids], cfg.rollout.group_size,
                                            self.sampling(index))
        with timer("reward"):
            batch, metrics = reward_rollouts(rollouts, rows, self.reward, self.tokenizer, cfg.correct_threshold,
                                             RewardState(index, cfg.steps))
        with timer("guidance"):
            batch, guided = self.guidance(batch, rows, index) if self.guidance else (batch, {})
        batch, filtered = filter_batch(batch, cfg.algorithm.batch_filters)
        if batch is not None:  # a step whose every group is flat makes no update and no schedule step
            with timer("signals"):
                batch, signals = self.signals(batch, self.policy, index)
                batch = replace(batch, advantages=estimate_advantages(
                    batch.advantage_inputs(cfg.critic.gamma, cfg.critic.lam), cfg.algorithm, index + 1))
            with timer("update"):
                metrics |= self.update(batch, index) | signals
                metrics |= self.critic.update(batch, cfg.optim.micro_batch_size) if self.critic else {}
            self.scheduler.step()
        self.last_batch = batch
        self.step += 1
        timing = timer.metrics()
        tokens = float(rollouts.response_mask.sum())
        return {**metrics, **guided, **filtered, **self.coefficients(index + 1), **timing,
                "response_length": tokens / rollouts.size, "tokens_per_s": tokens / timing["step_time"],
                "lr": self.scheduler.get_last_lr()[0]}

    def sampling(self, index: int) -> SamplingParams:
        """How step ``index`` samples its rollouts (its own seed)."""
        r = self.cfg.rollout
        return SamplingParams(r.temperature, r.top_p, r.max_new_tokens, seed=derive_seed(self.cfg.seed, "rollout", index))

    def coefficients(self, step: int) -> dict[str, float]:
        """The scheduled coefficients in force at ``step`` (from 1), for the pieces whose weight decays."""
        a = self.cfg.algorithm
        scheduled = {**a.advantage_addons, **a.regularizers}
        return {f"coef/{name}": spec.at(step) for name, spec in scheduled.items() if spec.decay > 0}

    # ---- evaluation, checkpoints, the run ------------------------------------------------------
    def evaluate(self, tag: str | None = None) -> dict[str, float]:
        """pass@k, greedy accuracy, length and distinct correct paths on every held-out set; with a ``tag``,
        the per-problem reports are kept as ``eval/<tag>_<set>.json`` (what ``guidedrl analyze`` reads)."""
        e, metrics = self.cfg.eval, {}
        for name, rows in self.eval_sets.items():
            report = evaluate(self.engine, self.tokenizer, rows, split=name, ks=e.ks, n_samples=e.samples,
                              temperature=e.temperature, max_new_tokens=self.cfg.rollout.max_new_tokens,
                              seed=self.cfg.seed)
            if tag is not None:
                (self.out / "eval").mkdir(exist_ok=True)
                report.write_json(self.out / "eval" / f"{tag}_{name}.json")
            metrics[f"eval/{name}/greedy"] = report.greedy_accuracy
            metrics.update({f"eval/{name}/pass@{k}": v for k, v in report.pass_at_k.items()})
            metrics[f"eval/{name}/distinct_paths"] = report.mean_distinct_paths
            metrics[f"eval/{name}/length"] = report.mean_length
        return metrics

    def save(self) -> Path:
        """An atomic checkpoint of everything an exact resume needs."""
        state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "sampler": self.sampler.state_dict()}
        if self.critic is not None:
            state.update(critic=self.critic.state_dict(), critic_optimizer=self.critic.optimizer.state_dict())
        return save_checkpoint(self.out / "checkpoints", self.step, self.policy, self.tokenizer, state,
                               self.cfg.keep_checkpoints)

    def restore(self, checkpoint: Path) -> None:
        """Optimizer, schedule, data position, RNG, critic and step of a checkpoint (its weights are loaded)."""
        state = load_state(checkpoint)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.critic is not None:
            self.critic.load_state_dict(state["critic"])
            self.critic.optimizer.load_state_dict(state["critic_optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.sampler.load_state_dict(state["sampler"])
        self.step = int(state["step"])
        self.logger.truncate_after(self.step)
        self.console.print(f"resumed from {checkpoint} at step {self.step}")

    def train(self) -> dict[str, dict[str, float]]:
        """Run to ``cfg.steps``: evaluate before (unless resumed), log, checkpoint, evaluate after."""
        cfg = self.cfg
        before_path = self.out / "eval_before.json"
        if not before_path.exists():
            before_path.write_text(json.dumps(self.evaluate("before"), indent=1))
        before = json.loads(before_path.read_text())
        columns = [TextColumn("step {task.completed}/{task.total}"), BarColumn(),
                   TextColumn("reward {task.fields[reward]:.2f} all-wrong {task.fields[all_wrong]:.2f}"),
                   TimeElapsedColumn()]
        with Progress(*columns, console=self.console) as progress:
            task = progress.add_task("train", total=cfg.steps, completed=self.step, reward=0.0, all_wrong=0.0)
            while self.step < cfg.steps:
                metrics = self.train_step()
                if cfg.eval.every and self.step % cfg.eval.every == 0 and self.step < cfg.steps:
                    metrics.update(self.evaluate())
                if self.step % cfg.log_every == 0:
                    self.logger.log(self.step, metrics)
                if cfg.save_every and self.step % cfg.save_every == 0:
                    self.save()
                progress.update(task, completed=self.step, reward=metrics["reward"], all_wrong=metrics["all_wrong"])
        after = self.evaluate("after")
        self.logger.log(self.step, after)
        self.save()
        self.policy.save_pretrained(self.out / "final")
        self.tokenizer.save_pretrained(self.out / "final")
        summary = {"before": before, "after": after}
        (self.out / "summary.json").write_text(json.dumps(summary, indent=1))
        self.logger.close()
        return summary
