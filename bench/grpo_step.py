"""GRPO step time: guidedrl vs TRL's GRPOTrainer, interleaved in one process on the same model.

Both start from the same model with the same prompts, group size, sampling and update settings (by default
the world's student, 8 prompts x 8 completions, <= 32 new tokens, temperature 1, one update per step, no KL).
``--model 50m`` takes a random ~50M-parameter Llama instead; its rows always run to ``--new-tokens`` (TRL:
``min_new_tokens``; guidedrl: its engine never stops early) and its reward is the share of digits in the
completion (the answer check would score every random text 0, and guidedrl skips the update of a step whose
groups are all flat). ``--engine vllm`` samples guidedrl's rollouts with vLLM (run with ``.venv-vllm``). A TRL callback
runs one guidedrl step after every TRL step, so both see the same machine state. TRL's step is split by
timing its own methods (generation, rewards, the loss forward; the rest is backward, optimizer and
bookkeeping); guidedrl's split is its logged ``time/*``. Prints versions, threads and machine, and writes
``runs/bench/grpo_step.json`` (``--update-docs``: also ``bench/results/`` and the docs' tables, bench/publish.py).

    python bench/grpo_step.py [--world worlds/default] [--steps 20] [--threads 2]
    .venv-vllm/bin/python bench/grpo_step.py --model 50m --engine vllm --prompts 4 --new-tokens 256 --steps 3 \
        --warmup 1 --name grpo_step_50m
"""

from __future__ import annotations

import argparse
import functools
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

from bench_env import environment
from full_length import full_length_engine, random_llama
from guidedrl.config import TrainConfig
from guidedrl.data import load_rows
from guidedrl.registry import REWARDS
from guidedrl.rewards import math_answer_reward
from guidedrl.trainer.loop import Trainer
from publish import add_result_options, save_result

GROUP, LR = 8, 1e-4
# TRL's vLLM on a CPU: its share of host memory counts what the process already holds (guidedrl's model and engine),
# so TRL's default 0.3 leaves its KV cache nothing ("requested memory for kv (-0.09/5.31 GiB)")
TRL_VLLM_MEMORY = 0.6
CORRECTION = {"level": "sequence", "mode": "mask", "threshold": 3.0}  # TRL's default with vLLM: sequence_mask, C_max 3
TRL_PHASES = {"generate": "_generate", "reward": "_calculate_rewards", "loss_forward": "compute_loss"}


class Interleave(TrainerCallback):
    """Times each TRL step (and its phases), then runs and times one guidedrl step."""

    def __init__(self, ours: Trainer) -> None:
        self.ours, self.trl_steps, self.our_steps = ours, [], []
        self.phase_seconds: dict[str, float] = {}
        self.start = 0.0

    def timed(self, phase: str, fn):  # noqa: ANN001, ANN201
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.phase_seconds[phase] = self.phase_seconds.get(phase, 0.0) + time.perf_counter() - start
        return wrapper

    def on_step_begin(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
        self.phase_seconds = {}
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
        total = time.perf_counter() - self.start
        self.trl_steps.append({"step_time": total, **self.phase_seconds,
                               "other": total - sum(self.phase_seconds.values())})
        start = time.perf_counter()
        metrics = self.ours.train_step()
        self.our_steps.append({**metrics, "wall": time.perf_counter() - start})


@REWARDS.register("bench_digit_share")
def digit_share(completions: list[str], **_: object) -> list[float]:
    """The share of digit characters in each completion: a reward that varies on a random model's text."""
    return [sum(ch.isdigit() for ch in text) / max(1, len(text)) for text in completions]


def median(records: list[dict], key: str) -> float:
    return statistics.median(r.get(key, 0.0) for r in records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", default="worlds/default")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3, help="leading steps of each left out of the median")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of both trainers")
    parser.add_argument("--model", choices=("student", "50m"), default="student")
    parser.add_argument("--engine", choices=("hf", "vllm"), default="hf", help="guidedrl's rollout engine")
    parser.add_argument("--prompts", type=int, default=8, help="prompts per step (x 8 completions)")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--no-recompute", action="store_true",
                        help="guidedrl takes the engine's behaviour log-probs (rollout.recompute_behaviour_logp=false)")
    parser.add_argument("--rollout-correction", action="store_true", help="guidedrl weights its tokens by "
                        "pi_old / pi_sampler as TRL does by default with vLLM (algorithm.rollout_correction: "
                        "sequence level, masked above 3)")
    parser.add_argument("--trl-bf16", action="store_true", help="TRL's default bf16 autocast (guidedrl runs fp32)")
    parser.add_argument("--trl-vllm", action="store_true", help="TRL generates with its own vLLM in the same "
                        "process (use_vllm=True, vllm_mode='colocate'; run with .venv-vllm)")
    add_result_options(parser, "grpo_step")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    world = Path(args.world)
    prompts, new_tokens = args.prompts, args.new_tokens
    rows = load_rows(world / "data" / "train.jsonl")
    tmp = Path(tempfile.mkdtemp(prefix="grpo_bench_"))
    tokenizer = AutoTokenizer.from_pretrained(world / "models" / "student")
    random = args.model == "50m"
    model = random_llama(tokenizer, tmp / "random_50m") if random else world / "models" / "student"
    reward, reward_name = (digit_share, "bench_digit_share") if random else (math_answer_reward, "math_answer")

    ours = Trainer(TrainConfig(
        world=str(world), model=str(model), output_dir=str(tmp / "ours"), steps=args.steps, save_every=0,
        rewards=[{"name": reward_name, "weight": 1.0}],
        rollout={"prompts_per_step": prompts, "group_size": GROUP, "max_new_tokens": new_tokens,
                 "engine": args.engine, **({"recompute_behaviour_logp": False} if args.no_recompute else {})},
        algorithm={"rollout_correction": CORRECTION} if args.rollout_correction else {},
        optim={"lr": LR, "micro_batch_size": prompts * GROUP}), console=Console(quiet=True),
        engine=full_length_engine(args.engine) if random else None)

    trl_args = GRPOConfig(
        output_dir=str(tmp / "trl"), max_steps=args.steps, per_device_train_batch_size=prompts * GROUP,
        num_generations=GROUP, max_completion_length=new_tokens, learning_rate=LR, beta=0.0, num_iterations=1,
        temperature=1.0, top_p=1.0, top_k=0, lr_scheduler_type="constant", warmup_steps=0,
        logging_steps=10**6, save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True, seed=0,
        gradient_checkpointing=False,  # TRL turns it on by default; it only costs time at this size
        bf16=args.trl_bf16,  # TRL's default is bf16 autocast, also on a CPU: emulated (slow) without bf16 units
        # a random model's rows run to the limit: transformers' and vLLM's names for the same floor
        generation_kwargs={"min_tokens" if args.trl_vllm else "min_new_tokens": new_tokens} if random else None,
        **({"use_vllm": True, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": TRL_VLLM_MEMORY}
           if args.trl_vllm else {}))
    timer = Interleave(ours)
    trl = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(model), reward_funcs=reward,
                      args=trl_args, processing_class=tokenizer, callbacks=[timer],
                      train_dataset=Dataset.from_list([{"prompt": r["prompt"], "answer": r["answer"]} for r in rows]))
    for phase, method in TRL_PHASES.items():
        setattr(trl, method, timer.timed(phase, getattr(trl, method)))
    trl.train()
    ours.run_dir.release()

    trl_steps, our_steps = timer.trl_steps[args.warmup:], timer.our_steps[args.warmup:]
    trl_s, our_s = median(trl_steps, "step_time"), median(our_steps, "step_time")
    env = environment()
    result = {
        "environment": env, "settings": {"prompts": prompts, "group": GROUP, "new_tokens": new_tokens, "lr": LR,
                                         "steps": args.steps, "warmup": args.warmup, "trl_bf16": args.trl_bf16,
                                         "model": args.model, "engine": args.engine,
                                         "recompute": not args.no_recompute,
                                         "rollout_correction": CORRECTION if args.rollout_correction else None,
                                         "trl_generation": "vllm colocate" if args.trl_vllm else "transformers"},
        "parameters": sum(p.numel() for p in ours.policy.parameters()),
        "trl": {"median_step_s": trl_s, **{k: median(trl_steps, k) for k in [*TRL_PHASES, "other"]}},
        "guidedrl": {"median_step_s": our_s, **{k.removeprefix("time/"): median(our_steps, k) for k in
                                                ("time/rollout", "time/reward", "time/signals", "time/update",
                                                 "time/sync")},
                     "response_length": median(our_steps, "response_length")},
        "speedup": trl_s / our_s,
    }
    path = save_result(result, args, "grpo_step")

    console = Console()
    console.print(f"{env['machine']}; torch {env['torch']}, transformers {env['transformers']}, trl {env['trl']}; "
                  f"{env['torch_threads']} torch threads; median of {len(trl_steps)} steps after {args.warmup}")
    table = Table(title=f"GRPO step, {prompts} prompts x {GROUP} completions, <= {new_tokens} new tokens, "
                        f"{result['parameters'] / 1e6:.2f}M-parameter Llama")
    for col in ("trainer", "median step (s)", "phases (median s)"):
        table.add_column(col)
    table.add_row(f"TRL GRPOTrainer ({'bf16 autocast' if args.trl_bf16 else 'fp32'}, "
                  f"{result['settings']['trl_generation']})", f"{trl_s:.3f}",
                  ", ".join(f"{k} {result['trl'][k]:.3f}" for k in [*TRL_PHASES, "other"]))
    table.add_row(f"guidedrl ({args.engine})", f"{our_s:.3f}", ", ".join(f"{k} {result['guidedrl'][k]:.3f}"
                                                        for k in ("rollout", "reward", "signals", "update",
                                                                  "sync")))
    console.print(table)
    print(f"guidedrl throughput = {result['speedup']:.2f}x TRL's; results in {path}")


if __name__ == "__main__":
    main()
