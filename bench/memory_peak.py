"""Peak memory of one training step at Qwen's real 151,936-token vocabulary, measured on this CPU.

A Qwen2-architecture model with that vocabulary and a tiny body (random weights, built from a config), rows of
``--length`` response tokens, one step each of GRPO, AMPO (teacher candidates verified, scored and inserted),
Guide-GRPO (hinted re-rolls) and TGPO (a local teacher), each a trainer of its own in one fresh process. The
sampler is replaced by an engine that returns random tokens (decoding 152k-way on a CPU would take minutes and is
not what is measured): every forward of the step — recompute, training forward and backward, teacher signal,
comprehension scoring, Guide's γ — is the real one. The figure is the rise of the process's peak resident memory
over the step (Linux ``VmHWM``, reset just before it; one malloc arena, see ``ONE_ARENA``), next to what
materializing the B×R×V fp32 logits would take and to the memory estimate's update phase.

    PYTHONPATH=bench python bench/memory_peak.py        # the four methods chunked, then GRPO with full logits

Writes ``runs/bench/memory_peak.json`` (``--update-docs``: also ``bench/results/`` and the docs' tables,
bench/publish.py).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from publish import add_result_options, save_result

ROOT = Path(__file__).resolve().parents[1]
VOCAB = 151_936
METHODS = {"grpo": "grpo.yaml", "ampo": "ampo.yaml", "guide": "guide_grpo.yaml", "tgpo": "tgpo.yaml"}
ROWS, GROUP = 2, 2  # prompts per step, rollouts per prompt
# glibc gives each torch worker thread a malloc arena of its own and keeps freed blocks resident, so a CPU
# process's resident memory grows with every chunk although the chunk's tensors are gone. With one arena and
# every block over 64 KiB mapped on its own (returned when freed; huge pages, so mapping costs little), the
# resident peak is what the live tensors need, as a GPU's allocator reports it
ONE_ARENA = {**os.environ, "MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_THRESHOLD_": "65536",
             "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}


def settings(method: str, root: Path, length: int, naive: bool) -> list[str]:
    """The config overrides of one measured step."""
    model = root / "model"
    sets = [f"model={model}", f"dataset={root / 'train.jsonl'}", f"eval_datasets.held={root / 'train.jsonl'}",
            f"output_dir={root / 'runs' / (method + ('-naive' if naive else ''))}", "steps=1", "save_every=0",
            "device=cpu", "precision=fp32",
            f"rollout.prompts_per_step={ROWS}", f"rollout.group_size={GROUP}", f"rollout.max_new_tokens={length}",
            "rollout.max_prompt_length=64", "rollout.recompute_behaviour_logp=true", "optim.micro_batch_size=64",
            "optim.mini_batches=1", "guidance.num_guidance=1", "report_to=[]"]
    if method == "tgpo":
        sets.append(f"teacher_signal.path={model}")
    if naive:  # every forward over the whole batch, B×R×V logits at once
        sets += ["memory.tokens_per_forward=null", "memory.logits_chunk=null"]
    else:
        sets += [f"memory.tokens_per_forward={2 * (length + 64)}", "memory.logits_chunk=16"]
    return sets


def build(root: Path, length: int) -> None:
    """The model (random weights, real vocabulary, tiny body) and two problems with long teacher solutions."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    sys.path.insert(0, str(ROOT / "examples"))
    from tiny_chat_model import bpe_tokenizer

    tok = bpe_tokenizer("<|im_end|>", "<|endoftext|>")
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=VOCAB, hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=4096, tie_word_embeddings=True,
                                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    for part in (model, tok):
        part.save_pretrained(root / "model")
    filler = " ".join(["add 1 and 2"] * (length // 8))
    rows = [{"prompt": f"What is {a}+{b}?", "answer": str(a + b), "hint": f"add {a} and {b}",
             "teacher_solutions": [{"teacher": t, "text": f"{filler} so \\boxed{{{a + b}}}"} for t in ("t1", "t2")]}
            for a, b in [(3, 4), (5, 2)]]
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


class NoiseEngine:
    """A rollout engine that answers with ``length`` random tokens, behaviour log-probs those of a uniform
    sampler: never correct, except the first answer to a hinted prompt, which ends with the boxed sum (so a
    hinted group has a signal and Guide's update runs)."""

    def __init__(self, tokenizer: object, length: int) -> None:
        import torch
        self.tokenizer, self.length = tokenizer, length
        self.generator = torch.Generator().manual_seed(0)

    def sync_weights(self, model: object) -> None:
        """Nothing to sync: the tokens do not depend on the weights."""

    def generate(self, prompts: list[list[int]], n: int, sampling: object) -> object:
        import torch

        from guidedrl.rollout.engine import Rollouts
        owners = [i for i in range(len(prompts)) for _ in range(n)]
        low = len(self.tokenizer.all_special_ids) + 1
        responses = torch.randint(low, len(self.tokenizer), (len(owners), self.length), generator=self.generator)
        responses = responses.tolist()
        for i, prompt in enumerate(self.tokenizer.batch_decode(prompts)):
            sums = re.findall(r"(\d+)\+(\d+)", prompt)
            if "hint" in prompt and sums:
                boxed = self.tokenizer(f"\\boxed{{{sum(map(int, sums[0]))}}}", add_special_tokens=False)["input_ids"]
                responses[i * n][-len(boxed):] = boxed
        uniform = [[-math.log(VOCAB)] * self.length] * len(owners)
        return Rollouts.from_token_lists([prompts[i] for i in owners], responses, self.tokenizer.pad_token_id,
                                         self.tokenizer.eos_token_id, uniform, owners)


def _status(key: str) -> int:
    """A ``/proc/self/status`` figure in bytes."""
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def child(steps: list[str], root: Path, length: int) -> list[dict]:
    """One step of each of ``steps`` (a method, ``:naive`` for whole-batch forwards with full logits) in this
    process, each its own trainer: its peak rise over the step, the full-logits figure and the estimate's
    update phase (plus the optimizer state, which the step allocates)."""
    import gc

    import torch
    from rich.console import Console
    from transformers import AutoConfig

    from guidedrl.config import TrainConfig
    from guidedrl.memory.estimate import ModelShape, estimate_memory
    from guidedrl.trainer.loop import Trainer
    from guidedrl.yaml_config import load_config

    torch.set_num_threads(int(os.environ.get("GUIDEDRL_TEST_THREADS", "2")))
    shape = ModelShape.of(AutoConfig.from_pretrained(root / "model"))
    out = []
    for step in steps:
        method, naive = step.removesuffix(":naive"), step.endswith(":naive")
        cfg = load_config(ROOT / "configs" / METHODS[method], TrainConfig, settings(method, root, length, naive))
        trainer = Trainer(cfg, console=Console(quiet=True), engine=lambda p, tok, *_: NoiseEngine(tok, length))
        gc.collect()
        open("/proc/self/clear_refs", "w").write("5")  # the peak counts from here
        before = _status("VmRSS")
        metrics = trainer.train_step()
        rise = _status("VmHWM") - before
        estimate = estimate_memory(cfg, shape)
        out.append({"method": method, "naive": naive, "peak_rise_bytes": rise, "rows": ROWS * GROUP,
                    "length": length, "full_logits_bytes": ROWS * GROUP * length * VOCAB * 4,
                    "estimate_update_bytes": estimate.phase("update") + estimate.part("AdamW state (2 moments, fp32)"),
                    "inserted": metrics.get("guidance/teacher/inserted", 0.0),
                    "hinted_rate": metrics.get("guidance/hint/rate", 0.0)})
        trainer.run_dir.release()
        del trainer
    return out


def measure(steps: list[str], length: int = 256) -> list[dict]:
    """The steps (see :func:`child`) in a fresh process (one malloc arena, large blocks mapped on their own:
    see ``ONE_ARENA``)."""
    with tempfile.TemporaryDirectory(prefix="guidedrl-memory-") as tmp:
        build(Path(tmp), length)
        done = subprocess.run([sys.executable, __file__, "--child", ",".join(steps), "--root", tmp, "--length",
                               str(length)], capture_output=True, text=True, check=False, env=ONE_ARENA)
    if done.returncode != 0:
        raise RuntimeError(f"the measured steps failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default=",".join([*METHODS, "grpo:naive"]),
                        help="methods to step, comma-separated; METHOD:naive for whole-batch forwards, full logits")
    parser.add_argument("--length", type=int, default=256, help="response tokens per row")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print the results as one JSON line")
    add_result_options(parser, "memory_peak")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child.split(","), args.root, args.length)))
        return
    results = measure(args.steps.split(","), args.length)
    if args.json:
        print(json.dumps(results))
        return
    from bench_env import environment
    env = environment()
    save_result({"environment": env, "steps": results}, args, "memory_peak")
    print(f"{env['date']}, torch {env['torch']}, transformers {env['transformers']}, {env['torch_threads']} "
          f"threads, {env['machine']}")
    mib = 1024 ** 2
    for r in results:
        print(f"{r['method']:>6}{' (naive)' if r['naive'] else ''}: step peak +{r['peak_rise_bytes'] / mib:.0f} MiB; "
              f"B×R×V fp32 logits {r['full_logits_bytes'] / mib:.0f} MiB ({r['rows']} rows × {r['length']} "
              f"tokens); estimate {r['estimate_update_bytes'] / mib:.0f} MiB")


if __name__ == "__main__":
    main()
