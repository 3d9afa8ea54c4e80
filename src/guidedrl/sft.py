"""``guidedrl sft``: supervised fine-tuning on the verified teacher solutions of the training data (the baseline
the AMPO and LUFFY papers compare with, and the first half of SFT→GRPO / SFT→AMPO), through TRL's
``SFTTrainer``, with the same data loading, held-out evaluation, run folder and checkpoints as ``train``.

The pairs are every row's ``teacher_solutions`` that the run's reward verifies (never a wrong one), as TRL
prompt/completion rows (conversational when the prompts are messages), trained on the completion only.
"""

from __future__ import annotations

from typing import Literal

from datasets import Dataset
from pydantic import Field
from rich.console import Console
from transformers import TrainerCallback

from guidedrl.config import TrainConfig
from guidedrl.data import DatasetError
from guidedrl.files import write_json
from guidedrl.guidance.build import check_teacher_names
from guidedrl.rewards import Reward
from guidedrl.trainer.loop import Trainer
from guidedrl.yaml_config import StrictModel


class SFTSection(StrictModel):
    """What ``guidedrl sft`` trains on and how; steps, optim.lr, optim.micro_batch_size, eval and the run folder
    come from the rest of the config."""

    teachers: list[str] | None = Field(None, description="use these teachers' solutions (None: every teacher)")
    per_problem: int | None = Field(None, ge=1, description="at most this many verified solutions per problem")
    scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial",
                       "inverse_sqrt"] = Field("constant", description="transformers lr schedule (those that need no "
                                               "arguments beyond warm-up and steps)")


class SFTRunConfig(TrainConfig):
    """A ``train`` config with an ``sft`` section."""

    sft: SFTSection = Field(default_factory=SFTSection)


def verified_pairs(rows: list[dict], reward: Reward, threshold: float, section: SFTSection) -> list[dict]:
    """TRL prompt/completion rows of the teacher solutions the run's reward finds correct."""
    candidates = [(row, s["text"]) for row in rows for s in row.get("teacher_solutions", [])
                  if section.teachers is None or s["teacher"] in section.teachers]
    if not candidates:
        return []
    rewards, _ = reward([row for row, _ in candidates], [text for _, text in candidates])
    pairs: list[dict] = []
    taken: dict[int, int] = {}
    for (row, text), value in zip(candidates, rewards.tolist()):
        if value <= threshold or taken.get(id(row), 0) >= (section.per_problem or len(candidates)):
            continue
        taken[id(row)] = taken.get(id(row), 0) + 1
        chat = isinstance(row["prompt"], list)
        pairs.append({"prompt": row["prompt"],
                      "completion": [{"role": "assistant", "content": text}] if chat else text})
    return pairs


class _LogToRun(TrainerCallback):
    """TRL's training logs into the run's metrics.jsonl / TensorBoard."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001, ANN201
        if logs:
            numbers = {f"sft/{k}" if k != "loss" else "loss": float(v) for k, v in logs.items()
                       if isinstance(v, (int, float))}
            self.trainer.logger.log(state.global_step, numbers)


def run_sft(cfg: SFTRunConfig, console: Console | None = None, overwrite: bool = False) -> dict[str, dict[str, float]]:
    """Evaluate, fine-tune on verified teacher solutions, checkpoint, evaluate; returns the before/after summary."""
    from trl import SFTConfig, SFTTrainer

    console = console or Console()
    trainer = Trainer(cfg, console=console, overwrite=overwrite)  # the run folder, model, data and evaluation
    try:
        check_teacher_names(cfg.sft.teachers, trainer.rows, str(trainer.paths.dataset), "sft.teachers")
        pairs = verified_pairs(trainer.rows, trainer.reward, cfg.correct_threshold, cfg.sft)
        if not pairs:
            raise DatasetError(trainer.paths.dataset, "no verified teacher_solutions to fine-tune on")
        console.print(f"SFT on {len(pairs)} verified teacher solutions of {len(trainer.rows)} problems")
        before = trainer.evaluate("before")
        write_json(trainer.out / "eval_before.json", before)
        args = SFTConfig(
            output_dir=str(trainer.out / "sft"), max_steps=cfg.steps,
            per_device_train_batch_size=cfg.optim.micro_batch_size,
            learning_rate=cfg.optim.lr, lr_scheduler_type=cfg.sft.scheduler, warmup_steps=cfg.optim.warmup_steps,
            weight_decay=cfg.optim.weight_decay, max_grad_norm=cfg.optim.grad_clip, logging_steps=cfg.log_every,
            save_strategy="no", report_to=[], seed=cfg.seed, completion_only_loss=True, bf16=cfg.precision == "bf16",
            use_cpu=next(trainer.policy.parameters()).device.type == "cpu", disable_tqdm=True,
            max_length=trainer.policy.config.max_position_embeddings)
        SFTTrainer(model=trainer.policy, args=args, train_dataset=Dataset.from_list(pairs),
                   processing_class=trainer.tokenizer, callbacks=[_LogToRun(trainer)]).train()
        trainer.policy.eval()
        trainer.step = cfg.steps
        trainer.save()
        after = trainer.evaluate("after")
        trainer.logger.log(trainer.step, after, final=True)
        summary = {"before": before, "after": after}
        trainer.write_final(summary)
        return summary
    finally:
        trainer.logger.close()
        trainer.run_dir.release()

