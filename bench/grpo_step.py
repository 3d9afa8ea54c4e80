"""GRPO step time: guidedrl vs TRL's GRPOTrainer, interleaved in one process on the same world model.

Both start from the world's student with the same prompts, group size, sampling and update
settings (8 prompts x 8 completions, <= 32 new tokens, temperature 1, one update per step, no KL).
A TRL callback runs one guidedrl step after every TRL step, so both see the same machine state.

    python bench/grpo_step.py [--world worlds/default] [--steps 20]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from datasets import Dataset
from rich.console import Console
from rich.table import Table
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import GRPOConfig, GRPOTrainer

from guidedrl.config import TrainConfig
from guidedrl.data import load_rows
from guidedrl.rewards import math_answer_reward
from guidedrl.trainer.loop import Trainer

PROMPTS, GROUP, NEW_TOKENS, LR = 8, 8, 32, 1e-4


class Interleave(TrainerCallback):
    """Times each TRL step, then runs and times one guidedrl step."""

    def __init__(self, ours: Trainer) -> None:
        self.ours, self.trl_times, self.our_times, self.start = ours, [], [], 0.0
        self.our_phases: list[dict[str, float]] = []

    def on_step_begin(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
        self.trl_times.append(time.perf_counter() - self.start)
        start = time.perf_counter()
        self.our_phases.append(self.ours.train_step())
        self.our_times.append(time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", default="worlds/default")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3, help="leading steps of each left out of the median")
    args = parser.parse_args()
    torch.set_num_threads(2)
    world = Path(args.world)
    student = world / "models" / "student"
    rows = load_rows(world / "data" / "train.jsonl")
    tmp = Path(tempfile.mkdtemp(prefix="grpo_bench_"))

    ours = Trainer(TrainConfig(
        world=str(world), output_dir=str(tmp / "ours"), steps=args.steps, save_every=0,
        rollout={"prompts_per_step": PROMPTS, "group_size": GROUP, "max_new_tokens": NEW_TOKENS},
        optim={"lr": LR, "micro_batch_size": PROMPTS * GROUP}), console=Console(quiet=True))

    tokenizer = AutoTokenizer.from_pretrained(student)
    trl_args = GRPOConfig(
        output_dir=str(tmp / "trl"), max_steps=args.steps, per_device_train_batch_size=PROMPTS * GROUP,
        num_generations=GROUP, max_completion_length=NEW_TOKENS, learning_rate=LR, beta=0.0, num_iterations=1,
        temperature=1.0, top_p=1.0, top_k=0, lr_scheduler_type="constant", warmup_steps=0,
        logging_steps=10**6, save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True, seed=0,
        gradient_checkpointing=False)  # TRL turns it on by default; it only costs time at this size
    timer = Interleave(ours)
    trl = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(student), reward_funcs=math_answer_reward,
                      args=trl_args, processing_class=tokenizer, callbacks=[timer],
                      train_dataset=Dataset.from_list([{"prompt": r["prompt"], "answer": r["answer"]} for r in rows]))
    trl.train()

    trl_s = statistics.median(timer.trl_times[args.warmup:])
    our_s = statistics.median(timer.our_times[args.warmup:])
    params = sum(p.numel() for p in ours.policy.parameters())
    table = Table(title=f"GRPO step, {PROMPTS} prompts x {GROUP} completions, <= {NEW_TOKENS} new tokens, "
                        f"{params / 1e6:.2f}M-parameter Llama, {torch.get_num_threads()} threads, "
                        f"median of {len(timer.trl_times) - args.warmup} steps")
    for col in ("trainer", "median step (s)", "steps / s"):
        table.add_column(col, justify="right")
    table.add_row("TRL GRPOTrainer", f"{trl_s:.3f}", f"{1 / trl_s:.2f}")
    table.add_row("guidedrl", f"{our_s:.3f}", f"{1 / our_s:.2f}")
    Console().print(table)
    print(f"guidedrl throughput = {trl_s / our_s:.2f}x TRL's")
    phases = {k: statistics.median(m[k] for m in timer.our_phases[args.warmup:])
              for k in ("time/rollout", "time/score_guide", "time/update")}
    print("where guidedrl's step goes (median s): " + ", ".join(f"{k.removeprefix('time/')} {v:.3f}" for k, v in phases.items()))


if __name__ == "__main__":
    main()
