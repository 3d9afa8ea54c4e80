"""The GPU smoke run, prepared for the day a GPU is lent: real shapes, real steps, peak memory against the estimate.

It builds a Qwen2.5-1.5B-architecture model from its published config (configs/models/, random weights,
nothing downloaded) and a word-level tokenizer over the full 151,936-token vocabulary, then trains 3 GRPO
steps with every weight trained and 3 AMPO steps with LoRA adapters (teacher solutions inserted into every
failing group), in bf16 with gradient checkpointing, responses of ``--new-tokens`` (2,048) tokens, with the
built-in engine (vLLM when it imports). For each it prints the step time, tokens per second, the peak GPU
memory torch allocated, and the memory estimate ``guidedrl train --dry-run`` gives for the same config.

On a GPU machine whose image has torch, transformers, accelerate and peft but no package index (about 5
minutes on one H200)::

    python3 -m pip install --no-index --no-deps build/gpu-wheels/*.whl     # make gpu-wheels, here, first
    PYTHONPATH=src:bench python3 bench/gpu_smoke.py --out $OUT/gpu_smoke.json

``--dry-run`` runs the same path on the CPU at a toy size (a 2-layer body, a 512-token vocabulary, 48 new
tokens, one step each); the test suite runs it so the script cannot rot while no GPU is lent.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAPE = ROOT / "configs" / "models" / "qwen2.5-math-1.5b"
PROBLEMS = [(a, b) for a in range(3, 9) for b in range(2, 6)]


def build(root: Path, toy: bool, solution_tokens: int) -> Path:
    """The model folder (random weights in bf16, Qwen2.5-Math-1.5B's shape; with ``toy`` a 2-layer body and a
    512-token vocabulary) and a JSONL of sums with two teachers' long verified solutions."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    config = AutoConfig.from_pretrained(SHAPE)
    if toy:
        config.update({"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128,
                       "num_attention_heads": 4, "num_key_value_heads": 2, "layer_types": ["full_attention"] * 2,
                       "vocab_size": 512})
    specials = ["<|endoftext|>", "<|im_end|>", "[UNK]"]
    words = specials + ["What", "is", "add", "and", "so", "step", "hint:", "?"] + [str(n) for n in range(100)] + \
        [f"\\boxed{{{n}}}" for n in range(100)] + [f"{a}+{b}" for a, b in PROBLEMS]
    words += [f"w{i}" for i in range(config.vocab_size - len(words))]  # the rest of the ids
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                        unk_token="[UNK]")
    config.update({"eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id,
                   "bos_token_id": tokenizer.pad_token_id})
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    folder = root / "model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    filler = " ".join(["step"] * solution_tokens)
    rows = [{"prompt": f"What is {a}+{b} ?", "answer": str(a + b), "teacher_solutions": [
        {"teacher": t, "text": f"{filler} add {a} and {b} so \\boxed{{{a + b}}}"} for t in ("t1", "t2")]}
        for a, b in PROBLEMS]
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def runs(new_tokens: int, steps: int, engine: str, device: str) -> list[tuple[str, str, list[str]]]:
    """The two measured runs: (name, method config, overrides) of GRPO fully trained and AMPO with LoRA."""
    common = ["precision=bf16", "gradient_checkpointing=true", f"device={device}", f"steps={steps}",
              "save_every=0", "report_to=[]", "rollout.prompts_per_step=4", "rollout.group_size=8",
              f"rollout.max_new_tokens={new_tokens}", "rollout.max_prompt_length=32", f"rollout.engine={engine}",
              "memory.tokens_per_forward=16384", "memory.logits_chunk=1024", "optim.micro_batch_size=8",
              "optim.lr=1e-6", "eval.before=false"]
    ampo = ["guidance.num_guidance=2", "guidance.per_teacher=1", "lora.r=16", "lora.alpha=32"]
    return [("grpo, full fine-tuning", "grpo.yaml", common), ("ampo, LoRA r=16", "ampo.yaml", [*common, *ampo])]


def measure(name: str, config: str, sets: list[str], root: Path, model: Path) -> dict:
    """One run's steps: time and tokens per step, peak GPU memory, and the estimate for its config."""
    import torch
    from rich.console import Console

    from guidedrl.config import TrainConfig
    from guidedrl.memory.plan import plan
    from guidedrl.precision import Precision, device_memory_gib, resolve_device
    from guidedrl.trainer.loop import Trainer
    from guidedrl.yaml_config import load_config

    out = root / "runs" / name.split(",")[0]
    cfg = load_config(ROOT / "configs" / config, TrainConfig, [
        f"model={model}", f"dataset={root / 'train.jsonl'}", f"eval_datasets.held={root / 'train.jsonl'}",
        f"output_dir={out}", *sets])
    device = resolve_device(cfg.device)
    estimate = plan(cfg, model, gpu_memory_gib=device_memory_gib(Precision(cfg.precision, device)))
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    trainer = Trainer(cfg, console=Console(quiet=True))
    records = []
    for _ in range(cfg.steps):
        start = time.time()
        metrics = trainer.train_step()
        if cuda:
            torch.cuda.synchronize(device)
        records.append({"seconds": time.time() - start, "tokens_per_s": metrics["tokens_per_s"],
                        "response_length": metrics["response_length"], "reward": metrics["reward"],
                        "grad_norm": metrics.get("grad_norm", 0.0),
                        "inserted": metrics.get("guidance/teacher/inserted", 0.0),
                        "rollout_s": metrics.get("time/rollout", float("nan")),
                        "update_s": metrics.get("time/update", float("nan"))})
    trainer.run_dir.release()
    peak = torch.cuda.max_memory_allocated(device) if cuda else None
    reserved = torch.cuda.max_memory_reserved(device) if cuda else None
    del trainer
    if cuda:
        torch.cuda.empty_cache()
    return {"run": name, "steps": records, "peak_allocated_bytes": peak, "peak_reserved_bytes": reserved,
            "estimate_bytes": estimate.total, "estimate": estimate.lines(), "engine": cfg.rollout.engine}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="the same path on the CPU at a toy size")
    parser.add_argument("--new-tokens", type=int, default=2048, help="response length (every row runs to it)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--out", type=Path, help="write the figures (and the environment) here as JSON")
    args = parser.parse_args()
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        sys.exit("error: no CUDA device; --dry-run runs the smoke path on the CPU at a toy size")
    try:
        import vllm  # noqa: F401
        engine = "vllm"
    except ImportError:
        engine = "hf"
    new_tokens, steps = (48, 1) if args.dry_run else (args.new_tokens, args.steps)
    device = "cpu" if args.dry_run else "cuda"
    results = []
    with tempfile.TemporaryDirectory(prefix="guidedrl-gpu-smoke-") as tmp:
        root = Path(tmp)
        model = build(root, args.dry_run, new_tokens)
        for name, config, sets in runs(new_tokens, steps, "hf" if args.dry_run else engine, device):
            results.append(measure(name, config, sets, root, model))
            r = results[-1]
            gib = 1024 ** 3
            peak = "n/a on a CPU" if r["peak_allocated_bytes"] is None else \
                f"{r['peak_allocated_bytes'] / gib:.1f} GiB allocated ({r['peak_reserved_bytes'] / gib:.1f} reserved)"
            times = ", ".join(f"{s['seconds']:.1f} s ({s['tokens_per_s']:.0f} tok/s)" for s in r["steps"])
            print(f"{name} [{r['engine']}]: steps {times}; peak {peak}; estimate {r['estimate_bytes'] / gib:.1f} GiB",
                  flush=True)
    from bench_env import environment
    record = {"environment": environment(), "dry_run": args.dry_run, "new_tokens": new_tokens, "runs": results}
    if args.out:
        args.out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
