"""The training loop: sample, score, guide, estimate advantages, update. Orchestration only.

Every method (GRPO, LUFFY, AMPO, Guide, TGPO, RKL, PPO) runs through :meth:`Trainer.train_step`;
a method is a config: a guidance strategy, an advantage estimator and a policy loss by name.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import replace
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from transformers import AutoModelForCausalLM, AutoTokenizer

from guidedrl.algorithms.advantages import (ADVANTAGES, AdvantageInputs, linear_decay, plus_reverse_kl,
                                            rows_with_signal)
from guidedrl.algorithms.losses import (POLICY_LOSSES, LossInputs, LossSettings, mean_reverse_kl, mismatch_ratio,
                                        teacher_token_mask)
from guidedrl.batch import RolloutBatch
from guidedrl.config import TrainConfig
from guidedrl.data import encode_prompts, load_rows, validate_rows
from guidedrl.eval.evaluate import evaluate
from guidedrl.guidance.base import GuidanceContext
from guidedrl.guidance.build import build_guidance
from guidedrl.rewards import REWARDS, RewardFn, weighted_reward
from guidedrl.rollout.engine import Rollouts, SamplingParams
from guidedrl.rollout.forward import response_logprobs
from guidedrl.rollout.hf_engine import HFEngine
from guidedrl.teachers.scorer import TeacherScorer, TokenizerMismatchError
from guidedrl.trainer.critic import Critic
from guidedrl.trainer.checkpoint import checkpoints, load_state, save_checkpoint
from guidedrl.trainer.logger import MetricsLogger
from guidedrl.trainer.optim import build_optimizer
from guidedrl.trainer.paths import RunPaths
from guidedrl.trainer.sampler import PromptSampler
from guidedrl.yaml_config import ConfigError, dump_config


def build_reward(cfg: TrainConfig) -> RewardFn:
    """The weighted sum of the configured registered rewards."""
    return weighted_reward([(REWARDS[spec.name], spec.weight) for spec in cfg.rewards])


def _mean_stats(acc: dict[str, float], stats: dict[str, float], weight: float) -> None:
    for key, value in stats.items():
        acc[key] = acc.get(key, 0.0) + weight * value


class Trainer:
    """Holds the run's state (policy, optimizer, data position) and steps it."""

    def __init__(self, cfg: TrainConfig, resume: bool = False, console: Console | None = None) -> None:
        self.cfg, self.console = cfg, console or Console()
        self.paths = RunPaths.resolve(cfg)
        self.out = Path(cfg.output_dir)
        torch.manual_seed(cfg.seed)
        last = checkpoints(self.out / "checkpoints")[-1] if resume and checkpoints(self.out / "checkpoints") else None
        weights = last or self.paths.model
        self.tokenizer = AutoTokenizer.from_pretrained(weights)
        dtype = torch.bfloat16 if cfg.dtype == "bfloat16" else torch.float32
        self.policy = AutoModelForCausalLM.from_pretrained(weights, dtype=dtype)
        self.engine = HFEngine(self.policy, self.tokenizer.pad_token_id, self.tokenizer.eos_token_id)
        self.rows = validate_rows(load_rows(self.paths.dataset, cfg.dataset_split), str(self.paths.dataset))
        self.prompt_ids = encode_prompts(self.tokenizer, [r["prompt"] for r in self.rows])
        self.eval_sets = {name: validate_rows(load_rows(path), str(path))[:cfg.eval.max_problems]
                          for name, path in self.paths.eval_sets.items()}
        self.reward_fn = build_reward(cfg)
        self.reference = copy.deepcopy(self.policy).eval() if cfg.algorithm.kl_coef > 0 else None
        self.optimizer, self.scheduler = build_optimizer(self.policy, cfg.optim, cfg.steps)
        self.sampler = PromptSampler(len(self.rows), cfg.rollout.prompts_per_step, cfg.seed)
        self.loss_fn = POLICY_LOSSES[cfg.algorithm.loss]
        self.advantage_fn = ADVANTAGES[cfg.algorithm.advantage]
        self.guidance = build_guidance(cfg.guidance, GuidanceContext(
            policy=self.policy, tokenizer=self.tokenizer, engine=self.engine, reward_fn=self.reward_fn,
            correct_threshold=cfg.correct_threshold, group_size=cfg.rollout.group_size,
            temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p,
            max_new_tokens=cfg.rollout.max_new_tokens, seed=cfg.seed))
        self.teacher = self._teacher_scorer()
        self.critic = Critic(str(weights), cfg.critic, dtype) if cfg.algorithm.advantage == "gae" else None
        self.step = 0
        self.logger = MetricsLogger(self.out)
        if last is not None:
            state = load_state(last)
            self.optimizer.load_state_dict(state["optimizer"])
            if self.critic is not None:
                self.critic.load_state_dict(state["critic"])
                self.critic.optimizer.load_state_dict(state["critic_optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.sampler.load_state_dict(state["sampler"])
            self.step = int(state["step"])
            self.logger.truncate_after(self.step)
            self.console.print(f"resumed from {last} at step {self.step}")
        else:
            dump_config(cfg, self.out / "config.yaml")

    def _teacher_scorer(self) -> TeacherScorer | None:
        """The TGPO/RKL teacher, if the config names one; a vocabulary mismatch is a config error."""
        t = self.cfg.teacher_signal
        if self.paths.teacher is None:
            return None
        try:
            return TeacherScorer(str(self.paths.teacher), self.tokenizer, t.label, t.temperature,
                                 t.top_k if t.target == "topk" else 0)
        except TokenizerMismatchError as err:
            raise ConfigError(f"teacher_signal.path: {err}") from None
        except ValueError as err:
            raise ConfigError(f"teacher_signal: {err}") from None

    # ---- one step -------------------------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        """Sample prompts, roll out G each, score, guide, compute advantages and update the policy."""
        cfg, start = self.cfg, time.perf_counter()
        indices = self.sampler.next_batch()
        rows = [self.rows[i] for i in indices]
        sampling = SamplingParams(cfg.rollout.temperature, cfg.rollout.top_p, cfg.rollout.max_new_tokens,
                                  seed=cfg.seed * 1_000_003 + self.step)
        rollouts = self.engine.generate([self.prompt_ids[i] for i in indices], cfg.rollout.group_size, sampling)
        generated = time.perf_counter()
        batch = self.score(rollouts, rows)
        rollouts_reward_mean = batch.rewards.mean().item()
        all_wrong, all_right = batch.group_outcomes()
        guidance_stats: dict[str, float] = {}
        if self.guidance is not None:
            batch, guidance_stats = self.guidance(batch, rows, self.step)
        if cfg.algorithm.filter_groups:  # DAPO: a group of equal rewards carries no signal
            keep = rows_with_signal(batch.rewards, batch.group_index)
            guidance_stats["filtered_rows"] = 1.0 - keep.float().mean().item()
            batch = batch.select(keep.nonzero().squeeze(1)) if keep.any() else None
        stats: dict[str, float] = {"time/update": 0.0}
        if batch is not None:
            stats = self.learn(batch)
            self.scheduler.step()  # the schedule counts optimizer updates
        self.step += 1
        seconds = time.perf_counter() - start
        tokens = float(rollouts.response_mask.sum())
        return {"reward": rollouts_reward_mean, "all_wrong": all_wrong, "all_right": all_right,
                "response_length": tokens / rollouts.size, "lr": self.scheduler.get_last_lr()[0],
                "step_time": seconds, "tokens_per_s": tokens / seconds, "time/rollout": generated - start,
                "time/score_guide": start + seconds - generated - stats["time/update"], **guidance_stats, **stats}

    def learn(self, batch: RolloutBatch) -> dict[str, float]:
        """Teacher scores and advantages of the step's final batch, then the policy (and critic) update;
        ``time/update`` is the update alone."""
        cfg = self.cfg
        teacher_stats: dict[str, float] = {}
        if self.teacher is not None:
            batch, teacher_stats = self.score_with_teacher(batch)
        values = self.critic.values(batch.rollouts) if self.critic is not None else None
        inputs = AdvantageInputs(
            rewards=batch.rewards, response_mask=batch.rollouts.response_mask, group_index=batch.group_index,
            on_policy=~batch.off_policy, behaviour_logp=batch.rollouts.behaviour_logp, teacher_logp=batch.teacher_logp,
            values=values, gamma=cfg.critic.gamma, lam=cfg.critic.lam)
        advantages = self.advantage_fn(inputs, cfg.algorithm.adv_eps)
        if cfg.teacher_signal.rkl_weight > 0:
            advantages = plus_reverse_kl(advantages, inputs, cfg.teacher_signal.rkl_weight)
        prepared = time.perf_counter()
        stats = self.update(batch, advantages)
        if self.critic is not None:
            stats.update(self.critic.fit(batch.rollouts, batch.rewards, values, cfg.optim.micro_batch_size))
        return {**teacher_stats, **stats, "time/update": time.perf_counter() - prepared}

    def score(self, rollouts: Rollouts, rows: list[dict]) -> RolloutBatch:
        """Rewards of every response, with the dataset's columns passed to the reward functions."""
        n = self.cfg.rollout.group_size
        completions = rollouts.response_texts(self.tokenizer)
        columns = {k: [row[k] for row in rows for _ in range(n)] for k in rows[0] if k != "prompt"}
        prompts = [row["prompt"] for row in rows for _ in range(n)]
        rewards = torch.tensor(self.reward_fn(prompts, completions, **columns), dtype=torch.float32)
        return RolloutBatch.on_policy(rollouts, rewards, rewards > self.cfg.correct_threshold)

    def score_with_teacher(self, batch: RolloutBatch) -> tuple[RolloutBatch, dict[str, float]]:
        """The teacher's log-probs and labels on every row, and the student–teacher gap on the student's own
        samples (mismatch ratio, mean reverse KL), logged every step."""
        signal = self.teacher.score(batch.rollouts)
        own = batch.token_mask(~batch.off_policy & ~batch.hinted)
        r = batch.rollouts
        batch = replace(batch, teacher_logp=signal.logp, teacher_label=signal.label,
                        teacher_topk_ids=signal.topk_ids, teacher_topk_logp=signal.topk_logp)
        return batch, {"teacher/mismatch_ratio": mismatch_ratio(signal.label, r.response_ids, own),
                       "teacher/reverse_kl": mean_reverse_kl(r.behaviour_logp, signal.logp, own),
                       "teacher/ce_coef": self._teacher_coef()}

    def update(self, batch: RolloutBatch, advantages: torch.Tensor) -> dict[str, float]:
        """K epochs of ``mini_batches`` optimizer steps, each accumulated over micro-batches.

        Micro-batch losses are weighted by their share of the mini-batch's tokens (token-mean) or rows
        (the seq-mean modes), so accumulation gives the gradient of the whole mini-batch's loss, whatever
        the split; rows are grouped by length into micro-batches so that each is padded little. The
        behaviour log-probs come from the sampler (same weights, same temperature): no second forward.
        """
        o = self.cfg.optim
        settings = self._loss_settings()
        per_token = self.cfg.algorithm.agg_mode == "token-mean"
        updates = o.epochs * o.mini_batches
        acc: dict[str, float] = {}
        generator = torch.Generator().manual_seed(self.cfg.seed * 7919 + self.step)
        lengths = batch.rollouts.prompt_mask.sum(1) + batch.rollouts.response_mask.sum(1)
        self.policy.train()
        for _ in range(o.epochs):
            order = torch.randperm(batch.size, generator=generator) if o.mini_batches > 1 else torch.arange(batch.size)
            for mini in order.chunk(o.mini_batches):
                mini = mini[lengths[mini].argsort(stable=True)]  # similar lengths share a micro-batch: less padding
                weights = batch.rollouts.response_mask.sum(1) if per_token else torch.ones(batch.size)
                total = float(weights[mini].sum()) or 1.0
                self.optimizer.zero_grad(set_to_none=True)
                for micro in mini.split(o.micro_batch_size):
                    share = float(weights[micro].sum()) / total
                    loss, stats = self._micro_loss(batch.select(micro), advantages[micro], settings)
                    (loss * share).backward()
                    _mean_stats(acc, stats, share / updates)
                norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), o.grad_clip)
                _mean_stats(acc, {"grad_norm": float(norm)}, 1.0 / updates)
                self.optimizer.step()
        self.policy.eval()
        return acc

    def _teacher_coef(self) -> float:
        """λ_k of TGPO's teacher term at the coming update (linear decay from ``ce_coef``)."""
        t = self.cfg.teacher_signal
        return linear_decay(self.step + 1, t.ce_coef, t.ce_decay, t.ce_floor)

    def _loss_settings(self) -> LossSettings:
        a, t = self.cfg.algorithm, self.cfg.teacher_signal
        lam = self._teacher_coef()
        reg = t.form == "reg"
        return LossSettings(
            eps_low=a.eps_low, eps_high=a.eps_high, dual_clip=a.dual_clip, agg_mode=a.agg_mode,
            norm_length=a.norm_length or self.cfg.rollout.max_new_tokens, off_policy_gamma=a.off_policy_gamma,
            hint_shaping=a.hint_shaping, hint_gamma=a.hint_gamma, hint_percentile=a.hint_percentile,
            on_policy_clip=a.on_policy_clip, entropy_coef=a.entropy_coef, kl_coef=a.kl_coef,
            kdrl_coef=t.kdrl_coef, label_ce_coef=lam if reg and t.target == "label" else 0.0,
            topk_kl_coef=lam if reg and t.target == "topk" else 0.0, label_bonus_coef=0.0 if reg else lam)

    def _micro_loss(self, mb: RolloutBatch, advantages: torch.Tensor, settings: LossSettings
                    ) -> tuple[torch.Tensor, dict[str, float]]:
        """One forward on the training context and the registered loss on its response tokens."""
        r = mb.rollouts
        width = r.response_ids.shape[1]
        temperature = self.cfg.rollout.temperature
        out = response_logprobs(self.policy, r.input_ids, r.attention_mask, r.prompt_width, temperature,
                                labels=mb.teacher_label, with_entropy=True, topk_ids=mb.teacher_topk_ids)
        ref_logp = None
        if self.reference is not None:
            with torch.no_grad():
                ref_logp = response_logprobs(self.reference, r.input_ids, r.attention_mask, r.prompt_width,
                                             temperature).logp
        return self.loss_fn(LossInputs(
            logp=out.logp, behaviour_logp=r.behaviour_logp, advantages=advantages[:, :width],
            response_mask=r.response_mask, off_policy_mask=mb.token_mask(mb.off_policy),
            hint_mask=mb.token_mask(mb.hinted), entropy=out.entropy, ref_logp=ref_logp,
            teacher_logp=mb.teacher_logp, label_logp=out.label_logp, topk_logp=out.topk_logp,
            teacher_topk_logp=mb.teacher_topk_logp, teacher_tokens=self._teacher_tokens(mb, out.entropy)), settings)

    def _teacher_tokens(self, mb: RolloutBatch, entropy: torch.Tensor) -> torch.Tensor | None:
        """Where TGPO's teacher term applies in this micro-batch (None: every response token)."""
        t = self.cfg.teacher_signal
        if mb.teacher_label is None or t.tokens == "all":
            return None
        r = mb.rollouts
        return teacher_token_mask(t.tokens, r.response_mask, r.response_ids, mb.teacher_label, entropy,
                                  t.entropy_share)

    # ---- evaluation, checkpoints, the run ------------------------------------------------------
    def evaluate(self, tag: str | None = None) -> dict[str, float]:
        """pass@k, greedy accuracy, length and distinct correct paths on every held-out set; with a ``tag``,
        the per-problem reports are kept as ``eval/<tag>_<set>.json`` (what ``guidedrl analyze`` reads)."""
        e, metrics = self.cfg.eval, {}
        for name, rows in self.eval_sets.items():
            report = evaluate(self.engine, self.tokenizer, rows, split=name, ks=e.ks, n_samples=e.samples,
                              temperature=e.temperature, max_new_tokens=self.cfg.rollout.max_new_tokens,
                              seed=self.cfg.seed, reward_fn=self.reward_fn)
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
