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
- the learning rate: each method is trained at every rate of ``--lrs`` on the first seed and keeps the one with the
  best pass@1 on a validation set of the training distribution (``--validation-problems`` fresh 3- and 4-operand
  problems in the training split's shares; ties go to the lower rate); its other seeds run at that rate;
- methods at their rate and the budget, seeds ``--seeds`` (seed by seed, every method at a seed before the next
  seed): primary endpoint target pass@1 (temperature 1, ``--samples`` samples per problem), then target greedy,
  test_id and test_ood pass@1, and all of them again at the authors' temperature 0.6 from the final weights; the
  slip (a sample whose last step reaches the answer and whose box does not) measured on test_id for every model;
- paired differences (AMPO − GRPO, Guide-GRPO − GRPO, AMPO − LUFFY, TGPO − RKL) over the seeds both methods
  finished, with crossed-bootstrap intervals (bench/paired.py);
- evaluation draws from the evaluation seed stream, never the rollouts'; every run's ``final/`` is kept under
  ``--out``; a finished run of the very same config found there is read instead of trained again, and the result
  is saved after every run, so a stopped comparison goes on where it stopped.

The result keeps every scored run's per-problem tables, so a later invocation with ``--prior`` (an earlier result
of this bench) adds methods or seeds without the earlier runs' folders: a method not run now is carried over whole,
and a method run now keeps the prior's seeds it does not score again when they were measured at the rate it
chose now. A paired difference is computed from the tables where both methods have them; where an earlier result
kept no tables (before they were stored), its difference is carried over when it covers more seeds at the same
rates.

    python bench/guidance_regime.py                       # the control, then every method at seed 0
    python bench/guidance_regime.py --seeds 0 1 2 3 4     # the full comparison
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

from rich.console import Console

from bench_env import environment
from compare import CONFIGS, finished, setup
from compare import run as run_once
from guidedrl.data import encode_prompts, load_rows, write_jsonl
from guidedrl.eval.evaluate import evaluate_sets
from guidedrl.files import read_json, write_json
from guidedrl.rewards import extract_boxed
from guidedrl.rollout.engine import SamplingParams
from guidedrl.rollout.loading import load_for_sampling
from guidedrl.seeding import derive_seed
from guidedrl.sft import SFTRunConfig, run_sft
from guidedrl.world.splits import EVAL_SPLITS
from guidedrl.world.target import target_rows, validation_rows
from guidedrl.yaml_config import load_config
from paired import paired_diffs
from publish import add_result_options, save_result, settings

METHODS = ("grpo", "ampo", "guide_grpo", "luffy", "tgpo", "rkl_distill")
CONTRASTS = (("ampo", "grpo"), ("guide_grpo", "grpo"), ("ampo", "luffy"), ("tgpo", "rkl_distill"))
TEMPERATURES = {"t1": ("after", 1.0), "t0.6": ("cold", 0.6)}  # name: (report tag, temperature)
STEP_RESULT = re.compile(r"=(-?\d+)")
PROTOCOL = ("world", "lr", "steps", "target_problems", "samples", "control_gain")  # a prior must share these
VALIDATION_OPERANDS = [3, 4]  # the training split's 2-operand problems and the test set's hold 205 of the 207


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


class Evaluation:
    """The regime's held-out sets and how every model is scored on them (the same for all models)."""

    def __init__(self, sets: dict[str, list[dict]], validation: list[dict], samples: int, max_new_tokens: int
                 ) -> None:
        self.sets, self.validation_set, self.samples, self.max_new_tokens = sets, validation, samples, max_new_tokens

    def validation(self, model: Path, eval_dir: Path) -> float:
        """pass@1 (points) on the validation set at temperature 1 and evaluation seed 0, the rate's selection
        score (kept as ``eval_dir/validation_validation.json``)."""
        report = eval_dir / "validation_validation.json"
        if not report.is_file():
            tokenizer, _, engine = load_for_sampling(model)
            evaluate_sets(engine, tokenizer, {"validation": self.validation_set}, ks=[1], samples=self.samples,
                          temperature=1.0, max_new_tokens=self.max_new_tokens, seed=0, report_dir=eval_dir,
                          tag="validation")
        return pass1_points(report)

    def reports(self, eval_dir: Path, tag: str) -> dict[str, dict]:
        """The per-set reports a run (or :meth:`cold`) kept as ``eval_dir/<tag>_<set>.json``."""
        return {name: read_json(eval_dir / f"{tag}_{name}.json") for name in self.sets}

    def cold(self, model: Path, eval_dir: Path) -> None:
        """Evaluate ``model`` at temperature 0.6 (same problems, samples and evaluation seed as at temperature 1)
        unless its reports are already in ``eval_dir``."""
        tag, temperature = TEMPERATURES["t0.6"]
        if all((eval_dir / f"{tag}_{name}.json").is_file() for name in self.sets):
            return
        tokenizer, _, engine = load_for_sampling(model)
        evaluate_sets(engine, tokenizer, self.sets, ks=[1, self.samples], samples=self.samples,
                      temperature=temperature, max_new_tokens=self.max_new_tokens, seed=0, report_dir=eval_dir,
                      tag=tag)

    def slip(self, model: Path, cache: Path) -> float:
        """The slip rate on test_id (kept in ``cache``: the same weights and seed give the same samples)."""
        if not cache.is_file():
            write_json(cache, {"slip": slip_rate(model, self.sets["test_id"], self.samples, 0, self.max_new_tokens)})
        return read_json(cache)["slip"]

    def score(self, model: Path, eval_dir: Path, at_t1: tuple[Path, str] | None = None) -> dict:
        """pass@1 and greedy (points) per set at both temperatures, the slip, and the per-problem tables; the
        temperature-1 reports are ``eval_dir/after_<set>.json`` unless ``at_t1`` names another (folder, tag)."""
        self.cold(model, eval_dir)
        scores, problems = {}, {}
        for name, (tag, _) in TEMPERATURES.items():
            found = self.reports(*(at_t1 or (eval_dir, tag)) if name == "t1" else (eval_dir, tag))
            scores[name] = {f"{s}/{key}": round(100 * value, 2) for s, report in found.items()
                            for key, value in (("pass@1", report["pass_at_k"]["1"]),
                                               ("greedy", report["greedy_accuracy"]))}
            problems[name] = {s: [(p["n"], p["correct"], p["distinct_paths"]) for p in report["problems"]]
                              for s, report in found.items()}
        return {"scores": scores, "slip": self.slip(model, eval_dir / "slip.json"), "problems": problems}


def contrasts(tables: dict[str, dict[str, dict]], rates: dict[str, str], prior: dict, samples: int) -> dict:
    """Paired differences a − b per temperature and set over the seeds whose per-problem tables both methods have
    (crossed bootstrap); the prior's difference instead where it covers more seeds at the same rates."""
    found = {}
    for a, b in CONTRASTS:
        name = f"{a} − {b}"
        seeds = [s for s in tables.get(a, {}) if s in tables.get(b, {})]
        kept = prior.get("contrasts", {}).get(name)
        if kept and len(kept["seeds"]) > len(seeds) and all(prior_rate(prior, m) == rates.get(m) for m in (a, b)):
            found[name] = kept
        elif seeds:
            found[name] = {"seeds": seeds, **paired_by_set([tables[a][seed] for seed in seeds],
                                                           [tables[b][seed] for seed in seeds], samples)}
    return found


def paired_by_set(a: list[dict], b: list[dict], samples: int) -> dict:
    """Paired differences a − b (pass@1 and pass@``samples``, crossed bootstrap) per temperature and held-out set;
    ``a`` and ``b`` hold the same seeds' per-problem tables, in the same order."""
    return {t: {s: paired_diffs([seed[t][s] for seed in a], [seed[t][s] for seed in b], [1, samples])
                for s in a[0][t]} for t in TEMPERATURES}


def prior_rate(prior: dict, method: str) -> str | None:
    """The rate a prior result measured ``method`` at (its chosen rate, or the one rate of a result before rates
    were chosen); None when it has no such method."""
    if method not in prior.get("methods", {}):
        return None
    return prior.get("chosen_lr", {}).get(method) or f"{prior['settings']['lr']:g}"


def public(run: dict) -> dict:
    """A scored model as the result's table shows it: scores and slip."""
    return {"scores": run["scores"], "slip": run["slip"]}


def pass1_points(report: Path) -> float:
    """pass@1 of an evaluation report, in points (two decimals, as the result keeps every score)."""
    return round(100 * read_json(report)["pass_at_k"]["1"], 2)


def t1_pass(run_dir: Path, sets: dict[str, list[dict]]) -> dict[str, float]:
    """pass@1 (points) at temperature 1 per held-out set, from a run's own final evaluation."""
    return {f"{name}/pass@1": pass1_points(run_dir / "eval" / f"after_{name}.json") for name in sets}


def held_out(world: Path, out: Path, target_problems: int, validation_problems: int, samples: int
             ) -> tuple[list[str], Evaluation]:
    """The regime's held-out sets (the target class written to ``out/target.jsonl``): the config overrides that
    make a run evaluate on them at its end, and the :class:`Evaluation` that scores any model on them."""
    rows = target_rows(world, target_problems)
    if not rows:
        raise SystemExit(f"{world}: its student was fine-tuned on every training operand count (no target class)")
    paths = {"target": write_rows(rows, out / "target.jsonl"),
             **{split: world / "data" / f"{split}.jsonl" for split in EVAL_SPLITS}}
    overrides = [f"world={world}", f"eval_datasets={json.dumps({k: str(v) for k, v in paths.items()})}",
                 f"eval.samples={samples}", f"eval.ks=[1,{samples}]", f"eval.max_problems={target_problems}",
                 "eval.every=0"]
    return overrides, Evaluation({k: load_rows(v)[:target_problems] for k, v in paths.items()},
                                 validation_rows(world, validation_problems, VALIDATION_OPERANDS, rows),
                                 samples, max_new_tokens=64)  # the presets' rollout.max_new_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", type=Path, default=Path("worlds/default"))
    parser.add_argument("--out", type=Path, default=Path("runs/guidance_regime"))
    parser.add_argument("--lr", type=float, default=5e-5, help="the control's rate (GRPO's chosen rate)")
    parser.add_argument("--lrs", type=float, nargs="+", default=[5e-5, 1e-4, 2e-4],
                        help="the rates each method is tried at on the first seed")
    parser.add_argument("--steps", type=int, default=300, help="training steps of the control and every method")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--target-problems", type=int, default=300)
    parser.add_argument("--validation-problems", type=int, default=300)
    parser.add_argument("--samples", type=int, default=8, help="samples per held-out problem")
    parser.add_argument("--control-gain", type=float, default=10.0, help="points of target pass@1 the control "
                        "must add for the regime to be accepted")
    parser.add_argument("--prior", type=Path, help="an earlier result of this bench to add to (see above)")
    parser.add_argument("--only-finished", action="store_true", help="train nothing: score the runs already "
                        "finished in --out (the result of a stopped comparison)")
    add_result_options(parser, "guidance_regime")
    args = parser.parse_args()
    setup()
    evaluation, regime = held_out(args.world, args.out, args.target_problems, args.validation_problems, args.samples)
    target = args.out / "target.jsonl"
    prior = read_json(args.prior) if args.prior else {}
    differ = [k for k in PROTOCOL if prior and prior["settings"][k] != settings(args)[k]]
    if differ:
        raise SystemExit(f"{args.prior}: measured with other {', '.join(differ)} than this run's")

    # the positive control: SFT on the target class's verified teacher_steps solutions, at the RL rate and budget
    control_dir = args.out / "control"
    operands = {row["n_operands"] for row in load_rows(target)}
    train = [r for r in load_rows(args.world / "data" / "train.jsonl") if r["n_operands"] in operands]
    cfg = load_config(CONFIGS / "sft.yaml", SFTRunConfig, [
        *evaluation, f"optim.lr={args.lr}", f"dataset={write_rows(train, args.out / 'control_train.jsonl')}",
        "sft.teachers=[teacher_steps]", "optim.micro_batch_size=16", f"steps={args.steps}",
        f"output_dir={control_dir}", "seed=0"])
    if not finished(control_dir, cfg) and not args.only_finished:
        shutil.rmtree(control_dir, ignore_errors=True)
        run_sft(cfg, Console(quiet=True))
    untrained = regime.score(args.world / "models" / "student", control_dir / "untrained",
                             at_t1=(control_dir / "eval", "before"))  # the control's evaluation before training
    control = regime.score(control_dir / "final", control_dir / "eval")
    gain = control["scores"]["t1"]["target/pass@1"] - untrained["scores"]["t1"]["target/pass@1"]
    passed = gain >= args.control_gain
    print(f"control: target pass@1 {untrained['scores']['t1']['target/pass@1']} -> "
          f"{control['scores']['t1']['target/pass@1']} ({gain:+.1f}; "
          f"{'passed' if passed else 'failed'}: the regime needs {args.control_gain:+.0f})")
    # the prior's methods stay as they were until this run's sweep chooses their rate again
    sweep = dict(prior.get("sweep", {}))
    chosen = {m: prior_rate(prior, m) for m in prior.get("methods", {})}
    methods = {m: dict(found) for m, found in prior.get("methods", {}).items()}
    tables = {m: dict(prior.get("problems", {}).get(m, {})) for m in methods}

    def save() -> None:
        save_result({"environment": environment(), "settings": settings(args), "untrained": public(untrained),
                     "control": {**public(control), "gain": round(gain, 2), "passed": passed, "examples": len(train)},
                     "sweep": sweep, "chosen_lr": chosen, "methods": methods,
                     "contrasts": contrasts(tables, chosen, prior, args.samples),
                     "problems": tables}, args, "guidance_regime")  # (samples, correct, paths) per problem

    def train_at(method: str, seed: int, lr: float) -> Path | None:
        """The run of ``method`` at ``seed`` and ``lr`` (trained unless finished), or None with --only-finished
        when it is not there."""
        out = args.out / f"lr{lr:g}"
        run_dir = out / method / f"seed{seed}"  # where bench/compare.py's run puts it
        if args.only_finished:
            return run_dir if (run_dir / "summary.json").is_file() else None
        run_once(f"{method}.yaml", seed, args.steps, out, [*evaluation, f"optim.lr={lr}", "eval.before=false"],
                 reuse=True)
        return run_dir

    def scored(method: str, seed: int, run_dir: Path) -> None:
        """Score a run of ``method`` at its chosen rate into the result, and save it."""
        found = regime.score(run_dir / "final", run_dir / "eval")
        before = prior.get("methods", {}).get(method, {}).get(str(seed))
        if before and prior_rate(prior, method) == chosen[method] and before["scores"] != found["scores"]:
            print(f"{method} seed {seed}: the prior's scores differ from this run's: {before['scores']} then")
        methods.setdefault(method, {})[str(seed)] = public(found)
        tables.setdefault(method, {})[str(seed)] = found["problems"]
        print(method, seed, public(found))
        save()

    save()
    first, *later = args.seeds
    for method in args.methods if passed else []:  # the rate on the first seed, chosen on the validation set
        tried, dirs = {}, {}
        for lr in args.lrs:
            run_dir = train_at(method, first, lr)
            if run_dir is not None:
                dirs[f"{lr:g}"] = run_dir
                tried[f"{lr:g}"] = {"validation/pass@1": regime.validation(run_dir / "final", run_dir / "eval"),
                                    **t1_pass(run_dir, regime.sets)}
        if not tried:
            continue
        sweep[method] = tried
        chosen[method] = max(tried, key=lambda lr: (tried[lr]["validation/pass@1"], -float(lr)))
        print(method, "rate", chosen[method], {lr: v["validation/pass@1"] for lr, v in tried.items()})
        if chosen[method] != prior_rate(prior, method):  # the prior's seeds of this method were at another rate
            methods.pop(method, None)
            tables.pop(method, None)
        scored(method, first, dirs[chosen[method]])
    for seed in later if passed else []:  # the other seeds at each method's chosen rate, seed by seed
        for method in [m for m in args.methods if m in chosen]:
            run_dir = train_at(method, seed, float(chosen[method]))
            if run_dir is not None:
                scored(method, seed, run_dir)


if __name__ == "__main__":
    main()
