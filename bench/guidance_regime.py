"""The guidance regime: a problem class the student cannot solve at the start, a positive control that shows it
can learn the class from its teachers' text at the RL rate and budget, and the methods compared there.

The protocol, fixed before any method runs (docs/benchmarks.md, "The guidance regime"):

- target class: 4-operand problems (the world's student was fine-tuned on 2 and 3 operands only); the RL
  prompts are the world's training split as it is (965 of its 2,000 problems have 4 operands);
- held-out target set: ``--target-problems`` 4-operand problems drawn by the world's generator from a seed of
  their own, none of them a training or test problem;
- positive control: ``guidedrl sft`` of the student on teacher_steps' verified solutions of the 4-operand training
  problems only, at the RL rate (``--lr``) for the RL budget (``--steps`` × 16 examples); the regime is accepted
  when it lifts target pass@1 by at least ``--control-gain`` points, and the methods run only then;
- methods at that rate and budget, seeds ``--seeds``: primary endpoint target pass@1 (temperature 1,
  ``--samples`` samples per problem), then target greedy, test_id and test_ood pass@1; the slip (a sample whose
  last step reaches the answer and whose box does not) measured on test_id for every model;
- evaluation draws from the evaluation seed stream, never the rollouts'; every run's ``final/`` is kept under
  ``--out``.

    python bench/guidance_regime.py                       # the control, then grpo, ampo, guide_grpo at seed 0
    python bench/guidance_regime.py --seeds 0 1 2 3 4     # the full comparison
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
from pathlib import Path

from rich.console import Console

from bench_env import environment
from compare import CONFIGS, setup
from compare import run as run_once
from guidedrl.data import encode_prompts, load_rows, write_jsonl
from guidedrl.rewards import extract_boxed
from guidedrl.rollout.engine import SamplingParams
from guidedrl.rollout.loading import load_for_sampling
from guidedrl.seeding import derive_seed
from guidedrl.sft import SFTRunConfig, run_sft
from guidedrl.world.settings import WorldConfig
from guidedrl.world.splits import rows_for, sample_unique
from guidedrl.yaml_config import load_config
from publish import add_result_options, save_result, settings

TARGET_OPERANDS = 4
METHODS = ("grpo", "ampo", "guide_grpo")
STEP_RESULT = re.compile(r"=(-?\d+)")


def target_rows(world: Path, count: int) -> list[dict]:
    """``count`` held-out problems of the target class, none of them one of the world's training or test problems
    (the world's generator, from a seed of their own)."""
    cfg = WorldConfig.model_validate(json.loads((world / "world.json").read_text())["config"])
    taken = {row["prompt"].strip() for split in ("train", "test_id", "test_ood")
             for row in load_rows(world / "data" / f"{split}.jsonl")}
    rng = random.Random(f"guidance regime target set, world seed {cfg.seed}")  # a str seed: stable everywhere
    exprs = sample_unique(rng, count, [TARGET_OPERANDS], cfg.operand_max, cfg.operators, cfg.max_value, taken)
    return rows_for(exprs, "target")


def write_rows(rows: list[dict], path: Path) -> Path:
    """``rows`` as a JSONL dataset at ``path`` (its folder made), for a run's config to name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(path, rows)
    return path


def slip_rate(model: Path, rows: list[dict], samples: int, seed: int, max_new_tokens: int) -> float:
    """Share of sampled answers (temperature 1) whose last step's result is the answer and whose box is not."""
    tokenizer, _, engine = load_for_sampling(model)
    seeds = tuple(derive_seed(seed, "eval", i) for i in range(len(rows)))  # the evaluation stream
    out = engine.generate(encode_prompts(tokenizer, [r["prompt"] for r in rows]), samples,
                          SamplingParams(1.0, 1.0, max_new_tokens, seeds=seeds, behaviour_logp=False))
    slips = 0
    for i, text in enumerate(out.response_texts(tokenizer)):
        answer = rows[int(out.prompt_index[i])]["answer"]
        steps = STEP_RESULT.findall(text.rpartition("\\boxed{")[0])
        slips += bool(steps) and steps[-1] == answer and extract_boxed(text) != answer
    return slips / len(rows) / samples


def scores(summary: dict, name: str) -> dict[str, float]:
    """pass@1 and greedy (in points) of every evaluated set of a run's summary (``name``: after or before)."""
    found = summary[name]
    return {key.removeprefix("eval/"): round(100 * value, 2) for key, value in found.items()
            if key.endswith(("/pass@1", "/greedy"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", type=Path, default=Path("worlds/default"))
    parser.add_argument("--out", type=Path, default=Path("runs/guidance_regime"))
    parser.add_argument("--lr", type=float, default=5e-5, help="the RL rate (GRPO's chosen rate) and the control's")
    parser.add_argument("--steps", type=int, default=300, help="training steps of the control and every method")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--target-problems", type=int, default=300)
    parser.add_argument("--samples", type=int, default=8, help="samples per held-out problem")
    parser.add_argument("--control-gain", type=float, default=10.0, help="points of target pass@1 the control "
                        "must add for the regime to be accepted")
    add_result_options(parser, "guidance_regime")
    args = parser.parse_args()
    setup()
    target = write_rows(target_rows(args.world, args.target_problems), args.out / "target.jsonl")
    sets = {"target": str(target), "test_id": str(args.world / "data" / "test_id.jsonl"),
            "test_ood": str(args.world / "data" / "test_ood.jsonl")}
    evaluation = [f"world={args.world}", f"eval_datasets={json.dumps(sets)}", f"eval.samples={args.samples}",
                  f"eval.ks=[1,{args.samples}]", f"eval.max_problems={args.target_problems}", "eval.every=0",
                  f"optim.lr={args.lr}"]
    test_id = load_rows(args.world / "data" / "test_id.jsonl")
    max_new_tokens = 64  # the presets' rollout.max_new_tokens

    # the positive control: SFT on the target class's verified teacher_steps solutions, at the RL rate and budget
    control_dir = args.out / "control"
    shutil.rmtree(control_dir, ignore_errors=True)
    train = [r for r in load_rows(args.world / "data" / "train.jsonl") if r["n_operands"] == TARGET_OPERANDS]
    cfg = load_config(CONFIGS / "sft.yaml", SFTRunConfig, [
        *evaluation, f"dataset={write_rows(train, args.out / 'control_train.jsonl')}", "sft.teachers=[teacher_steps]",
        "optim.micro_batch_size=16", f"steps={args.steps}", f"output_dir={control_dir}", "seed=0"])
    summary = run_sft(cfg, Console(quiet=True))
    before, after = scores(summary, "before"), scores(summary, "after")
    gain = after["target/pass@1"] - before["target/pass@1"]
    result = {"environment": environment(), "settings": settings(args), "untrained": before,
              "control": {"scores": after, "gain": round(gain, 2), "passed": gain >= args.control_gain,
                          "examples": len(train)},
              "slip": {"untrained": slip_rate(args.world / "models" / "student", test_id, args.samples, 0,
                                              max_new_tokens),
                       "control": slip_rate(control_dir / "final", test_id, args.samples, 0, max_new_tokens)},
              "methods": {}}
    print(f"control: target pass@1 {before['target/pass@1']} -> {after['target/pass@1']} ({gain:+.1f}; "
          f"{'passed' if gain >= args.control_gain else 'failed'}: the regime needs {args.control_gain:+.0f})")
    if gain >= args.control_gain:  # the methods run only in an accepted regime
        for method in args.methods:
            for seed in args.seeds:
                run = run_once(f"{method}.yaml", seed, args.steps, args.out, [*evaluation, "eval.before=false"])
                final = args.out / method / f"seed{seed}" / "final"
                result["methods"].setdefault(method, {})[str(seed)] = {
                    "scores": scores(run, "after"),
                    "slip": slip_rate(final, test_id, args.samples, 0, max_new_tokens)}
                print(method, seed, result["methods"][method][str(seed)])
    save_result(result, args, "guidance_regime")


if __name__ == "__main__":
    main()
