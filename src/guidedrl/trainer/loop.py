"""The training loop: every method runs through :meth:`Trainer.train_step`, and a method is a config: a guidance
ladder, batch filters, an advantage estimator with add-ons, per-kind token surrogates and regularizers, each chosen
by name from a registry. The loop holds no method logic: each line of a step is a call into the module that owns
it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from guidedrl.algorithms.advantages import estimate_advantages
from guidedrl.batch import RolloutBatch, filter_batch, first_groups, reward_rollouts
from guidedrl.config import MAY_CHANGE_ON_RESUME, RolloutConfig, TrainConfig, resume_changes
from guidedrl.distributed import Ranks
from guidedrl.errors import RunError
from guidedrl.eval.evaluate import evaluate_sets
from guidedrl.files import atomic_dir, read_json, write_json
from guidedrl.guidance.base import GuidanceContext
from guidedrl.guidance.build import build_guidance
from guidedrl.memory.plan import plan, pretrained_kwargs, require_fit
from guidedrl.precision import Precision, device_memory_gib, disable_dropout, resolve_device
from guidedrl.registry import ENGINES
from guidedrl.rewards import Reward, RewardState
from guidedrl.rollout.budget import ForwardBudget
from guidedrl.rollout.engine import RolloutEngine, Rollouts, SamplingParams, release, with_pad_token
from guidedrl.seeding import derive_seed
from guidedrl.teachers.model import TokenizerMismatchError
from guidedrl.trainer.checkpoint import OPTIMIZER_SHARDS, checkpoints, load_state, save_checkpoint
from guidedrl.trainer.logger import MetricsLogger, PhaseTimer, check_report_to
from guidedrl.trainer.optim import build_optimizer
from guidedrl.trainer.paths import RunPaths, check_output_dir, load_pretrained, with_lora
from guidedrl.trainer.run_data import load_run_data
from guidedrl.trainer.run_dir import claim_run_dir, on_main
from guidedrl.trainer.sampler import PromptSampler
from guidedrl.trainer.signals import StepSignals
from guidedrl.trainer.update import PolicyUpdate
from guidedrl.yaml_config import ConfigError, dump_config, load_config

EngineFactory = Callable[[PreTrainedModel, PreTrainedTokenizerBase, RolloutConfig, Precision], RolloutEngine]


class Trainer:
    """Holds the run's state (policy, optimizer, data position) and steps it."""

    def __init__(self, cfg: TrainConfig, resume: bool = False, console: Console | None = None,
                 engine: EngineFactory | None = None, overwrite: bool = False) -> None:
        self.cfg, self.console = cfg, console or Console()
        self.ranks = Ranks.detect(cfg.device)
        self.paths = RunPaths.resolve(cfg)
        self.out = Path(cfg.output_dir)
        check_output_dir(cfg, self.paths)
        self.run_dir = claim_run_dir(self.ranks, self.out, resume, overwrite)  # locked; written only at commit
        try:
            self._build(engine)
        except BaseException:
            self.run_dir.release()
            raise

    def _build(self, engine: EngineFactory | None) -> None:
        cfg, last = self.cfg, self.run_dir.checkpoint
        if last is not None:
            self._check_resumable()
        torch.manual_seed(cfg.seed)
        try:
            precision = Precision(cfg.precision, self.ranks.device or resolve_device(cfg.device))
        except ValueError as err:
            raise ConfigError(f"device: {err}") from None
        if self.ranks.world > 1 and cfg.rollout.prompts_per_step % self.ranks.world:
            raise ConfigError(f"rollout.prompts_per_step: {cfg.rollout.prompts_per_step} prompts do not split over "
                              f"{self.ranks.world} processes")
        if self.ranks.fsdp and cfg.rollout.engine != "hf":
            raise ConfigError(f"rollout.engine: {cfg.rollout.engine} with FSDP-sharded weights is not supported; the "
                              "built-in engine (hf) samples from them")
        if self.ranks.fsdp and cfg.lora is not None:
            raise ConfigError("lora: LoRA under FSDP is not supported; its adapters and their AdamW state are small, "
                              "so train them unsharded (configs/accelerate/ddp.yaml)")
        self.memory = plan(self._memory_config(), self.paths.model, self.paths.teachers, self.ranks.world,
                           device_memory_gib(precision, cfg.memory.gpu_memory_gib))
        require_fit(self.memory)  # lengths within every model's context, the estimate within the device
        weights = last if last is not None and cfg.lora is None else self.paths.model
        self.tokenizer = with_pad_token(load_pretrained(AutoTokenizer, weights, "model"))
        self.policy = load_pretrained(AutoModelForCausalLM, weights, "model", dtype=precision.weights_dtype,
                                      **pretrained_kwargs(weights, cfg.model_overrides))
        if cfg.lora is not None:
            self.policy = with_lora(self.policy, cfg.lora, last)
        self.policy.to(precision.device)
        if cfg.disable_dropout:
            disable_dropout(self.policy)
        if cfg.gradient_checkpointing:
            self.policy.gradient_checkpointing_enable()
        self.engine = (engine or ENGINES.get(cfg.rollout.engine))(self.policy, self.tokenizer, cfg.rollout, precision)
        limit = cfg.rollout.max_prompt_length or self._context_limit()
        data = load_run_data(cfg, self.paths, self.tokenizer, limit, self.console)
        self.rows, self.prompt_ids, self.eval_sets = data.rows, data.prompt_ids, data.eval_sets
        self.reward = Reward(cfg.rewards)
        self.optimizer, self.scheduler = build_optimizer(self.policy, cfg.optim, cfg.steps)
        self.sampler = PromptSampler(len(self.rows), cfg.rollout.prompts_per_step, cfg.seed)
        self.guidance = build_guidance(cfg.guidance, GuidanceContext(
            policy=self.policy, tokenizer=self.tokenizer, engine=self.engine, reward=self.reward,
            correct_threshold=cfg.correct_threshold, group_size=cfg.rollout.group_size,
            sampling=SamplingParams.of(cfg.rollout), seed=cfg.seed, max_prompt_length=limit,
            context_length=getattr(self.policy.config, "max_position_embeddings", None), precision=precision,
            cache_dir=self.out / "teacher_cache", budget=ForwardBudget.of(cfg)))
        try:
            self.signals = StepSignals(cfg, self.paths.model, self.paths.teachers, self.tokenizer, precision,
                                       self.policy, self.out / "teacher_cache", self.ranks.world)
        except ConfigError:
            raise
        except TokenizerMismatchError as err:
            raise ConfigError(f"teacher_signal.path: {err}") from None
        except ValueError as err:
            raise ConfigError(f"teacher_signal: {err}") from None
        # the rows of a group the guidance fills itself (an added teacher trace) are not sampled
        self.samples_per_prompt = cfg.rollout.group_size - cfg.guidance.reserved_rows
        recompute = cfg.rollout.recompute_behaviour_logp
        if recompute is None:  # the sampler's log-probs are the training forward's exactly only in fp32 with hf
            recompute = cfg.precision != "fp32" or cfg.rollout.engine != "hf"
        train_model, self.optimizer = self.ranks.prepare(self.policy, self.optimizer)
        self.update = PolicyUpdate(self.policy, self.optimizer, cfg, precision, recompute, self.ranks, train_model)
        self.step, self.nonfinite_steps = 0, 0
        self.updates_applied: int | None = 0  # optimizer updates of the whole run (None: resumed from a checkpoint
        # written before they were counted)
        self.last_batch: RolloutBatch | None = None  # the final batch of the latest step, advantages included
        if last is not None:
            self.restore(last)
        if self.ranks.main:
            check_report_to(cfg.report_to)
        on_main(self.ranks, self.run_dir.commit)  # every start-up check passed: the folder becomes this run's
        self.logger = MetricsLogger(self.out, self.run_dir.run_id, self.step if last is not None else None,
                                    cfg.report_to, cfg.model_dump(mode="json"), enabled=self.ranks.main)
        if self.ranks.main:
            dump_config(cfg, self.out / "config.yaml")

    def _check_resumable(self) -> None:
        """A resume continues the same run: only the keys that may change on resume may differ."""
        recorded = load_config(self.out / "config.yaml", TrainConfig)
        changed = resume_changes(recorded, self.cfg)
        if changed:
            raise ConfigError(f"--resume: the config differs from the run's ({self.out / 'config.yaml'}) in "
                              f"{', '.join(changed)}; only {', '.join(MAY_CHANGE_ON_RESUME)} may change on resume")

    def _memory_config(self) -> TrainConfig:
        """The config the memory estimate reads, its ``memory.sharding`` what the launch really shards (FSDP2's
        reshard_after_forward: full when true, optimizer when false; none under DDP), said when they differ."""
        launched, configured = self.ranks.sharding, self.cfg.memory.sharding
        if self.ranks.world == 1 or launched == configured:
            return self.cfg
        if self.ranks.main:
            self.console.print(f"memory.sharding: the config says {configured}, the launch shards {launched}; the "
                               f"memory estimate uses {launched}", soft_wrap=True)
        return self.cfg.model_copy(update={"memory": self.cfg.memory.model_copy(update={"sharding": launched})})

    def _context_limit(self) -> int | None:
        """The model's context minus the response budget: the longest prompt that fits (None if unknown)."""
        context = getattr(self.policy.config, "max_position_embeddings", None)
        return None if context is None else context - self.cfg.rollout.max_new_tokens

    # ---- one step -------------------------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        """sample → generate → reward → guidance ladder → batch filters → signals → advantages → update."""
        cfg, index, timer = self.cfg, self.step, PhaseTimer()
        with self.ranks.full_weights(self.policy):  # FSDP: the whole weights on every rank while it samples, scores
            batch, rows, first, metrics, generated = self.collect(index, timer)
            stepping = self.ranks.any(batch is not None)
            signals: dict[str, float] = {}
            if stepping:
                release(self.engine)  # vLLM's sleep mode: its weights and KV cache leave the GPU until the sync
                with timer("signals"):
                    if batch is not None:
                        batch, signals = self.signals(batch, self.policy, index, rows)
                        batch = replace(batch, advantages=estimate_advantages(
                            batch.advantage_inputs(), cfg.algorithm, index + 1))
        if stepping:  # a step whose every group is flat makes no update, no schedule step
            with timer("update"):
                metrics |= self.update(batch, index, first) | signals
                metrics |= self.signals.update(batch) if batch is not None else {}
            self.scheduler.step()
            with timer("sync"):  # an engine holding its own copy (vLLM) samples the new weights
                self.engine.sync_weights(self.policy)
        self.last_batch = batch
        self.step += 1
        timing = timer.metrics()
        tokens = float(generated.response_mask.sum())
        metrics = self.ranks.combine({
            **metrics, **self.coefficients(index + 1), **timing,
            "response_length": tokens / generated.size, "tokens_per_s": tokens / timing["step_time"],
            "lr": self.scheduler.get_last_lr()[0]})
        self.count_nonfinite(metrics)
        return metrics

    def count_nonfinite(self, metrics: dict[str, float]) -> None:
        """Stop the run when every update of ``max_nonfinite_steps`` steps in a row was skipped as non-finite
        (counted by the updates the step made, whatever the mini-batch arithmetic)."""
        applied = round(metrics.get("updates", 0.0))
        if self.updates_applied is not None:
            self.updates_applied += applied
        all_skipped = metrics.get("updates_skipped", 0.0) > 0 and applied == 0
        self.nonfinite_steps = self.nonfinite_steps + 1 if all_skipped else 0
        if self.nonfinite_steps >= self.cfg.max_nonfinite_steps:
            raise RunError(f"step {self.step}: the loss or gradient was not finite in {self.nonfinite_steps} steps "
                           "in a row (no such update was applied; the checkpoints are intact): lower optim.lr "
                           "or check the rewards, then --resume")

    def collect(self, index: int, timer: PhaseTimer
                ) -> tuple[RolloutBatch | None, list[dict], int, dict[str, float], Rollouts]:
        """This rank's share of step ``index`` sampled, rewarded, guided and filtered: the batch (None when no group
        is left), its groups' data rows, the global position of its first prompt, the first round's metrics and
        the student's rollouts of the step. With ``algorithm.refill``, further rounds of fresh prompts (their own
        seeds) until the share holds as many kept groups as prompts, or the rounds run out; every rank draws every
        round, so the data order stays the same on all ranks and a resume is exact."""
        cfg, refill = self.cfg, self.cfg.algorithm.refill
        parts, rows, sampled, metrics, first = [], [], [], {}, 0
        for round_ in range(refill.max_generation_rounds if refill else 1):
            ids, start = self.ranks.share(self.sampler.next_batch())  # this rank's prompts of the step's batch
            position = start + round_ * cfg.rollout.prompts_per_step  # a refill round's prompts seed apart
            round_rows = [self.rows[i] for i in ids]
            with timer("rollout"):
                rollouts = self.engine.generate([self.prompt_ids[i] for i in ids], self.samples_per_prompt,
                                                self.sampling(index, position, len(ids)))
            with timer("reward"):
                batch, rewarded = reward_rollouts(rollouts, round_rows, self.reward, self.tokenizer,
                                                  cfg.correct_threshold, RewardState(index, cfg.steps))
            with timer("guidance"):
                batch, guided = self.guidance(batch, round_rows, index, position) if self.guidance else (batch, {})
            batch, filtered = filter_batch(batch, cfg.algorithm.batch_filters)
            if round_ == 0:
                metrics, first = rewarded | guided | filtered, start
            if batch is not None:
                parts.append(replace(batch, group_index=batch.group_index + len(rows)))
            rows, sampled = rows + round_rows, sampled + [rollouts]
            groups = sum(len(p.group_index.unique()) for p in parts)
            if refill is None or not self.ranks.any(groups < len(ids)):
                break
        if refill is None:
            return (parts[0] if parts else None), rows, first, metrics, rollouts
        metrics |= {"refill/rounds": float(len(sampled)), "refill/groups": float(min(groups, len(ids)))}  # trained
        pad = self.tokenizer.pad_token_id
        generated = Rollouts.concat(sampled, pad)
        if not parts:
            return None, [], first, metrics, generated
        batch, rows = first_groups(RolloutBatch.concat(parts, pad), rows, len(ids))  # this rank's share of groups
        return batch, rows, first, metrics, generated

    def sampling(self, index: int, first: int, count: int) -> SamplingParams:
        """How step ``index`` samples its rollouts: each prompt with a seed of its own, from the step and the
        prompt's position in the step's global batch (the same on any number of ranks)."""
        return SamplingParams.of(self.cfg.rollout, tuple(derive_seed(self.cfg.seed, "rollout", index, first + i)
                                                         for i in range(count)))

    def coefficients(self, step: int) -> dict[str, float]:
        """The scheduled coefficients in force at ``step`` (from 1), for the pieces whose weight decays."""
        a = self.cfg.algorithm
        scheduled = {**a.advantage_addons, **a.regularizers}
        return {f"coef/{name}": spec.at(step) for name, spec in scheduled.items() if spec.decay > 0}

    # ---- evaluation, checkpoints, the run ------------------------------------------------------
    def evaluate(self, tag: str | None = None) -> dict[str, float]:
        """pass@k, greedy accuracy, length and distinct correct paths on every held-out set; with a ``tag``,
        the per-problem reports are kept as ``eval/<tag>_<set>.json`` (what ``guidedrl analyze`` reads).
        Each rank evaluates its share of the problems; rank 0 gets the metrics (the others {})."""
        e = self.cfg.eval
        with self.ranks.full_weights(self.policy):
            return evaluate_sets(self.engine, self.tokenizer, self.eval_sets, ks=e.ks, samples=e.samples,
                                 temperature=e.temperature, max_new_tokens=self.cfg.rollout.max_new_tokens,
                                 seed=self.cfg.seed, report_dir=self.out / "eval", tag=tag, ranks=self.ranks)

    def save(self) -> Path:
        """An atomic checkpoint of everything an exact resume needs, written by rank 0 (its error raised on every
        rank). FSDP: the whole weights are gathered on rank 0, and every rank writes its own shard of the
        optimizer state beside the checkpoints, moved into the checkpoint as it is renamed into place."""
        rng = self.ranks.gather(torch.get_rng_state())  # every rank's (dropout, ...) generator
        root = self.out / "checkpoints"
        weights = self.ranks.full_state_dict(self.policy)
        shards = root / f".step_{self.step}.shards" if self.ranks.fsdp else None
        if shards is not None:
            if self.ranks.main:
                shutil.rmtree(shards, ignore_errors=True)  # a killed run's
            self.ranks.barrier()
            self.ranks.save_optimizer(self.optimizer, self.policy, shards)

        def write() -> Path:
            state = {"scheduler": self.scheduler.state_dict(), "sampler": self.sampler.state_dict(), "rank_rng": rng,
                     "updates_applied": self.updates_applied}
            if shards is None:
                state["optimizer"] = self.optimizer.state_dict()
            state.update(self.signals.checkpoint_state())
            return save_checkpoint(root, self.step, self.policy, self.tokenizer, state, self.cfg.keep_checkpoints,
                                   weights, shards)

        on_main(self.ranks, write)
        return root / f"step_{self.step}"

    def restore(self, checkpoint: Path) -> None:
        """Optimizer, schedule, data position, RNG, the signals' state (a critic) and step of a checkpoint (its
        weights are loaded); the metrics a killed run wrote after it are dropped when the logger opens."""
        state = load_state(checkpoint)
        if "rank_rng" in state and len(state["rank_rng"]) == self.ranks.world:
            torch.set_rng_state(state["rank_rng"][self.ranks.rank])
        sharded = (checkpoint / OPTIMIZER_SHARDS).exists()
        if sharded != self.ranks.fsdp:
            raise RunError(f"--resume: {checkpoint} holds {'each rank' if sharded else 'one'}'s optimizer state, "
                           f"written by {'an FSDP' if sharded else 'an unsharded'} launch; resume it with such a "
                           "launch")
        if sharded:
            self.ranks.load_optimizer(self.optimizer, self.policy, checkpoint)
        else:
            self.optimizer.load_state_dict(state["optimizer"])
        self.signals.load_checkpoint_state(state)
        self.scheduler.load_state_dict(state["scheduler"])
        self.sampler.load_state_dict(state["sampler"])
        self.step = int(state["step"])
        self.updates_applied = state.get("updates_applied")
        if self.ranks.main:
            self.console.print(escape(f"resumed from {checkpoint} at step {self.step}"))

    def train(self) -> dict[str, dict[str, float]]:
        """Run to ``cfg.steps``: evaluate before (unless resumed), log, checkpoint, evaluate after. The output
        folder stays locked until it returns or fails."""
        try:
            return self._train()
        finally:
            self.logger.close()
            self.run_dir.release()

    def _train(self) -> dict[str, dict[str, float]]:
        cfg, main = self.cfg, self.ranks.main
        before_path = self.out / "eval_before.json"
        if cfg.eval.before and not self.ranks.broadcast(before_path.exists()):
            before = self.evaluate("before")  # every rank evaluates its share
            if main:
                write_json(before_path, before)
        before = read_json(before_path) if main and before_path.exists() else {}
        columns = [TextColumn("step {task.completed}/{task.total}"), BarColumn(),
                   TextColumn("reward {task.fields[reward]:.2f} all-wrong {task.fields[all_wrong]:.2f}"),
                   TimeElapsedColumn()]
        with Progress(*columns, console=self.console, disable=not main) as progress:
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
        if self.updates_applied == 0:
            raise RunError(f"the run made no update in its {self.step} steps (each was skipped as non-finite, or "
                           f"every group was filtered): the model is unchanged, so no final/ is written; see "
                           f"updates_skipped and filtered_rows in {self.out / 'metrics.jsonl'}")
        saved = self.ranks.broadcast(bool(checkpoints(self.out / "checkpoints")) and
                                     checkpoints(self.out / "checkpoints")[-1].name == f"step_{self.step}")
        if not saved:
            self.save()
        after = self.evaluate("after")
        summary = {"before": before, "after": after}
        weights = self.ranks.full_state_dict(self.policy)  # FSDP: the whole weights, gathered on rank 0
        if main:
            self.logger.log(self.step, after, final=True)
        on_main(self.ranks, lambda: self.write_final(summary, weights))
        return summary

    def write_final(self, summary: dict[str, dict[str, float]], weights: dict[str, torch.Tensor] | None = None
                    ) -> None:
        """The trained model as ``final/`` (with LoRA: the adapters as ``final_adapter/``, ``final/`` merged) and
        ``summary.json``, each written atomically: a full disk leaves no half model, and says so in one line.
        ``weights``: a sharded model's whole weights."""
        advice = "the checkpoints are kept (free space or make the folder writable, then --resume)"
        if self.cfg.lora is not None:  # the adapters, and the merged model every tool can load
            with atomic_dir(self.out / "final_adapter", "the adapters", advice) as tmp:
                self.policy.save_pretrained(tmp)
            self.policy = self.policy.merge_and_unload()
        with atomic_dir(self.out / "final", "the final model", advice) as tmp:
            self.policy.save_pretrained(tmp, state_dict=weights)
            self.tokenizer.save_pretrained(tmp)
        write_json(self.out / "summary.json", summary)
