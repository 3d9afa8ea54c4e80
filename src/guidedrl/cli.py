"""The ``guidedrl`` command line: world building, evaluation, training, analysis and the demo."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from guidedrl.cli_errors import GuardedGroup, fail
from guidedrl.config_checks import SEED_MAX

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Guided RL with verifiable rewards.",
                  cls=GuardedGroup)


@app.callback()
def _quiet_hub_bars() -> None:
    """Our own progress bars only: the per-load bars of transformers would flood the terminal."""
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()


world_app = typer.Typer(no_args_is_help=True, help="The embedded arithmetic world.")
app.add_typer(world_app, name="world")
console = Console()

DEFAULT_WORLD = Path("worlds/default")


def _fail(message: str) -> None:
    fail(message, console)


def _parse_ks(text: str) -> list[int]:
    """The k of pass@k from ``-k 1,8,16``; anything else is a one-line error."""
    try:
        ks = [int(x) for x in text.split(",")]
    except ValueError:
        ks = []
    if not ks or min(ks) < 1:
        _fail(f"-k: expected comma-separated integers >= 1, got {text!r}")
    return ks


@world_app.command("build")
def world_build(
    out: Path = typer.Option(DEFAULT_WORLD, help="world directory"),
    size: str = typer.Option("default", help="preset: default (the shipped world) or micro (seconds, for tests)"),
    set_: list[str] = typer.Option([], "--set", help="override a world setting, e.g. --set teacher_steps=900"),
    force: bool = typer.Option(False, help="a folder holding another world (or other files) is moved aside "
                               "(renamed, never deleted) and the world built anew"),
) -> None:
    """Generate problems, train the student and the teachers, sample the teacher pool, evaluate."""
    _build_world(out, size, set_, force, "--out")


def _build_world(out: Path, size: str, sets: list[str], force: bool, option: str) -> None:
    """Build (or confirm) the world in ``out`` and show its table; ``option`` is how messages name ``out``."""
    from guidedrl.world.build import build_world
    from guidedrl.world.settings import world_preset

    cfg = world_preset(size, sets)
    start = time.time()
    manifest = build_world(out, cfg, console, force=force, option=option)
    console.print(world_table(out))
    console.print(f"world {escape(str(out))}: done in {time.time() - start:.0f} s "
                  f"(build steps took {sum(manifest['seconds'].values()):.0f} s in all)")


def world_table(world_dir: Path) -> Table:
    """Student and teachers side by side: greedy accuracy, pass@1 and pass@k on test_id and test_ood."""
    from guidedrl.files import read_json
    from guidedrl.world.splits import EVAL_SPLITS

    results = read_json(world_dir / "eval.json")
    any_report = next(iter(next(iter(results.values())).values()))
    ks = sorted(int(k) for k in any_report["pass_at_k"])
    table = Table(title=f"world {escape(str(world_dir))}: held-out evaluation")
    table.add_column("model")
    for split in EVAL_SPLITS:
        table.add_column(f"{split} greedy", justify="right")
        for k in ks:
            table.add_column(f"{split} pass@{k}", justify="right")
    table.add_column("all-wrong@8 (id)", justify="right")
    for name, by_split in results.items():
        cells = []
        for split in EVAL_SPLITS:
            r = by_split[split]
            cells += [f"{100 * r['greedy_accuracy']:.1f}"] + [f"{100 * r['pass_at_k'][str(k)]:.1f}" for k in ks]
        table.add_row(name, *cells, f"{100 * by_split['test_id']['all_wrong_share']:.0f}%")
    return table


@app.command("eval")
def eval_cmd(
    model: Path = typer.Option(..., help="a Hugging Face causal LM directory (with its tokenizer)"),
    benchmarks: str | None = typer.Option(None, help="the papers' suite instead of one split: comma-separated "
                                          "benchmarks (aime24, aime25, amc23, math500, minerva, olympiadbench, "
                                          "arc_c, gpqa_diamond, mmlu_pro, world_id, world_ood) or groups (math, "
                                          "ood, world; all = math + ood); the table in docs/rewards-and-evaluation.md "
                                          "says where each one's data comes from"),
    split: str | None = typer.Option(None, help="world split (test_id | test_ood) when --dataset is not given "
                                     "(default test_id)"),
    dataset: Path | None = typer.Option(None, help="JSONL / JSON / parquet / save_to_disk dataset with prompt, answer"),
    world: Path = typer.Option(DEFAULT_WORLD, help="world whose split is evaluated (and the world_* benchmarks')"),
    k: str | None = typer.Option(None, "-k", help="comma-separated k of pass@k (default 1,8,16; with --benchmarks "
                                 "every power of two up to the samples drawn)"),
    samples: int = typer.Option(32, min=1, help="--benchmarks: samples per problem of the avg@k benchmarks"),
    pass1_samples: int = typer.Option(1, min=1, help="--benchmarks: samples per problem of the pass@1 benchmarks"),
    temperature: float | None = typer.Option(None, min=0.0, help="sampling temperature (default 1.0; with "
                                             "--benchmarks 0.6, the papers')"),
    max_new_tokens: int | None = typer.Option(None, min=1, help="generation limit (default 128; with --benchmarks "
                                              "8192, the papers')"),
    seed: int = typer.Option(0, min=0, max=SEED_MAX, help="sampling seed"),
    device: str = typer.Option("auto", help="auto (CUDA when present), cpu, mps, cuda or cuda:N"),
    engine: str = typer.Option("hf", help="rollout engine: hf (built-in; decodes in chunks bounded by "
                               "rollout.kv_cache_tokens) or vllm"),
    template: str | None = typer.Option(None, help="--benchmarks: one prompt template for every benchmark (plain, "
                                        "qwen_math, r1_zero, r1_chat, or package.module:function); default: each "
                                        "benchmark's own"),
    data: list[str] = typer.Option([], "--data", help="--benchmarks: NAME=PATH, a local copy of a benchmark (.jsonl, "
                                   ".json, .parquet or save_to_disk folder, in its source's columns); repeatable"),
    data_dir: Path | None = typer.Option(None, envvar="GUIDEDRL_BENCHMARK_DATA", help="--benchmarks: a folder of "
                                         "local copies named <benchmark>.parquet / .jsonl / .json or <benchmark>/"),
    limit: int | None = typer.Option(None, min=1, help="--benchmarks: the first N problems of each benchmark"),
    greedy: bool = typer.Option(True, help="--benchmarks: also decode each problem greedily"),
    tag: str = typer.Option("eval", help="--benchmarks: names the result files (eval/<tag>_<benchmark>.json); "
                            "before and after in one folder are what guidedrl analyze compares"),
    output: Path | None = typer.Option(None, help="JSON report path (default runs/eval/<parent>_<model>_<split>.json);"
                                       " with --benchmarks the results' folder (default runs/eval/<parent>_<model>)"),
) -> None:
    """Greedy and sampled decoding, pass@k, mean response length and distinct correct solution paths, on one
    split or file, or on the papers' benchmarks (--benchmarks)."""
    if benchmarks is not None:
        given = [o for o, v in (("--split", split), ("--dataset", dataset), ("-k", k)) if v is not None]
        if given:
            _fail(f"{given[0]}: not with --benchmarks (each benchmark names its data; pass@k is reported up to the "
                  "samples drawn)")
        _eval_suite(model, benchmarks, world, samples, pass1_samples, temperature, max_new_tokens, seed, device,
                    engine, template, data, data_dir, limit, greedy, tag, output)
        return
    given = [o for o, v in (("--template", template), ("--data", data), ("--limit", limit)) if v]
    if given:
        _fail(f"{given[0]}: only with --benchmarks")
    from guidedrl.data import load_rows, validate_rows
    from guidedrl.eval.evaluate import evaluate
    from guidedrl.files import check_output_file

    ks = _parse_ks(k or "1,8,16")
    split = split or "test_id"
    name = dataset.stem if dataset else split
    output = output or Path("runs/eval") / f"{'_'.join(model.resolve().parts[-2:])}_{name}.json"
    check_output_file(output, "--output")  # before the evaluation, which a failed write would lose
    target = _device(device)
    source = dataset or world / "data" / f"{split}.jsonl"
    rows = validate_rows(load_rows(source), str(source))
    max_new_tokens = max_new_tokens or 128
    tokenizer, _, sampler = _load_for_eval(model, target, engine, max_new_tokens)
    report = evaluate(sampler, tokenizer, rows, split=name, ks=ks, temperature=1.0 if temperature is None else
                      temperature, max_new_tokens=max_new_tokens, seed=seed)
    table = Table(title=escape(f"{model} on {source} ({len(rows)} problems, {max(ks)} samples each)"))
    for col in ["greedy", *[f"pass@{k}" for k in ks], "mean length", "distinct correct paths"]:
        table.add_column(col, justify="right")
    table.add_row(f"{100 * report.greedy_accuracy:.1f}", *[f"{100 * report.pass_at_k[k]:.1f}" for k in ks],
                  f"{report.mean_length:.1f}", f"{report.mean_distinct_paths:.2f}")
    console.print(table)
    report.write_json(output)
    console.print(f"report written to {escape(str(output))}", highlight=False)


def _device(spec: str) -> object:
    """The ``--device`` resolved; an unknown or absent one is a one-line error."""
    from guidedrl.precision import resolve_device

    try:
        return resolve_device(spec)
    except ValueError as err:
        _fail(f"--device: {err}")


def _load_for_eval(model: Path, target: object, engine: str, max_new_tokens: int) -> tuple:
    """The tokenizer, the policy on ``target`` and the ``--engine`` sampling from it (the built-in one decodes
    in chunks bounded by rollout.kv_cache_tokens' default)."""
    from guidedrl.registry import ENGINES
    from guidedrl.rollout.loading import load_for_sampling

    try:
        ENGINES.check(engine)
    except ValueError as err:
        _fail(f"--engine: {err}")
    return load_for_sampling(model, engine, target, max_new_tokens, "--model")


def _eval_suite(model: Path, names: str, world: Path, samples: int, pass1_samples: int, temperature: float | None,
                max_new_tokens: int | None, seed: int, device: str, engine: str, template: str | None,
                data: list[str], data_dir: Path | None, limit: int | None, greedy: bool, tag: str,
                output: Path | None) -> None:
    """``eval --benchmarks``: every benchmark read and checked first, then evaluated; the table, the result
    (benchmarks_<tag>.json) and the per-problem reports (eval/<tag>_<name>.json) in the output folder."""
    from guidedrl.eval.benchmarks import select
    from guidedrl.eval.suite import (
        SuiteSettings,
        check_lengths,
        check_tag,
        load_suite,
        local_copies,
        output_paths,
        run_suite,
        suite_table,
        summarize,
        write_suite,
    )
    from guidedrl.files import check_output_file
    from guidedrl.registry import TEMPLATES

    check_tag(tag)
    if template is not None:
        try:
            TEMPLATES.check(template)
        except ValueError as err:
            _fail(f"--template: {err}")
    settings = SuiteSettings(samples, pass1_samples, 0.6 if temperature is None else temperature,
                             max_new_tokens or 8192, seed, greedy, limit, template)
    chosen = select(names)
    out = output or Path("runs/eval") / "_".join(model.resolve().parts[-2:])
    target = _device(device)
    loaded = load_suite(chosen, local_copies(data, data_dir, chosen), world, settings)
    for path in output_paths(out, tag, loaded):  # before the evaluation, which a failed write would lose
        check_output_file(path, "--output")
    tokenizer, policy, sampler = _load_for_eval(model, target, engine, settings.max_new_tokens)
    check_lengths(tokenizer, loaded, getattr(policy.config, "max_position_embeddings", None),
                  settings.max_new_tokens)
    reports = run_suite(sampler, tokenizer, loaded, settings, lambda line: console.print(escape(line)))
    result = summarize(loaded, reports, settings, tag, str(model), engine)
    path = write_suite(out, result, reports)
    console.print(suite_table(result, f"{model}: {', '.join(result['benchmarks'])}"))
    console.print(f"results written to {escape(str(path))} (per problem: {escape(str(out / 'eval'))})",
                  highlight=False)


@app.command()
def train(
    config: Path | None = typer.Argument(None, help="YAML config (see configs/); defaults train the world's student"),
    resume: bool = typer.Option(False, help="continue from the newest complete checkpoint in output_dir"),
    overwrite: bool = typer.Option(False, help="move a previous run in output_dir aside (renamed, never deleted)"),
    set_: list[str] = typer.Option([], "--set", help="override a config key, e.g. --set optim.lr=1e-4"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the memory estimate per process, then validate the "
                                 "config and build every piece (model, data, teacher, guidance) without training or "
                                 "writing to output_dir"),
    gpu_memory: float | None = typer.Option(None, "--gpu-memory", min=0.001, help="GiB of one accelerator the run "
                                            "must fit (memory.gpu_memory_gib; default: the device's own)"),
) -> None:
    """Train a policy with the method the config names (GRPO by default)."""
    from guidedrl.config import TrainConfig
    from guidedrl.trainer.loop import Trainer
    from guidedrl.yaml_config import load_config

    if gpu_memory is not None:
        set_ = [*set_, f"memory.gpu_memory_gib={gpu_memory}"]
    if dry_run:
        _dry_run(load_config(config, TrainConfig, set_))
        return
    cfg = load_config(config, TrainConfig, set_)
    trainer = Trainer(cfg, resume=resume, console=console, overwrite=overwrite)
    if trainer.run_dir.moved_to is not None:
        console.print(escape(f"the previous run in {cfg.output_dir} was moved to {trainer.run_dir.moved_to}"),
                      soft_wrap=True)
    summary = trainer.train()
    if trainer.ranks.main:  # the others hold no evaluation (rank 0 gathers it)
        console.print(before_after_table(summary, title=escape(f"{config or 'defaults'}: held-out before / after")))
        console.print(escape(f"run written to {cfg.output_dir}"))


@app.command()
def sft(
    config: Path = typer.Argument(..., help="YAML config with an `sft` section (see configs/sft.yaml)"),
    overwrite: bool = typer.Option(False, help="move a previous run in output_dir aside (renamed, never deleted)"),
    set_: list[str] = typer.Option([], "--set", help="override a config key"),
) -> None:
    """Supervised fine-tuning on the verified teacher solutions of the training data (TRL's SFTTrainer)."""
    from guidedrl.sft import SFTRunConfig, run_sft
    from guidedrl.yaml_config import load_config

    cfg = load_config(config, SFTRunConfig, set_)
    summary = run_sft(cfg, console, overwrite)
    console.print(before_after_table(summary, title=escape(f"{config}: SFT, held-out before / after")))
    console.print(escape(f"run written to {cfg.output_dir}; its model: {cfg.output_dir}/final"))


def _dry_run(cfg: object) -> None:
    """Print the memory estimate per process (refusing a run that cannot fit), then build a trainer for ``cfg``
    in a throw-away folder and print what a step would do; a model folder with only its config.json gets the
    estimate alone."""
    import shutil
    import tempfile

    from guidedrl.memory.plan import plan, require_fit
    from guidedrl.trainer.loop import Trainer
    from guidedrl.trainer.paths import RunPaths

    paths = RunPaths.resolve(cfg)
    estimate = plan(cfg, paths.model, paths.teachers)
    require_fit(estimate)  # a run that cannot fit: one error line naming the setting, then the table
    console.print(escape(f"memory per process ({cfg.memory.processes} process(es), sharding {cfg.memory.sharding}, "
                         f"{cfg.precision}, gradient_checkpointing {cfg.gradient_checkpointing}):"), highlight=False)
    console.print(escape("\n".join(estimate.lines())), highlight=False, soft_wrap=True)
    if not any(paths.model.glob("*.safetensors")):
        console.print(escape(f"{paths.model} holds a config.json and no weights: the estimate only, no piece built"))
        return
    scratch = Path(tempfile.mkdtemp(prefix="guidedrl-dry-run-"))
    try:
        trainer = Trainer(cfg.model_copy(update={"output_dir": str(scratch / "run")}), console=Console(quiet=True))
        trainer.run_dir.release()
        a, r, o = cfg.algorithm, cfg.rollout, cfg.optim
        params = sum(p.numel() for p in trainer.policy.parameters())
        trainable = sum(p.numel() for p in trainer.policy.parameters() if p.requires_grad)
        lines = [
            f"model: {trainer.paths.model} ({type(trainer.policy).__name__}, {params / 1e6:.2f}M parameters, "
            f"{trainable / 1e6:.2f}M trained, {cfg.precision} on {next(trainer.policy.parameters()).device})",
            f"data: {len(trainer.rows)} rows of {trainer.paths.dataset}; held-out: "
            + (", ".join(f"{k} ({len(v)})" for k, v in trainer.eval_sets.items()) or "none"),
            f"step: {r.prompts_per_step} prompts × {trainer.samples_per_prompt} samples (≤ {r.max_new_tokens} tokens) "
            f"→ {o.epochs * o.mini_batches} optimizer update(s), micro-batches of {o.micro_batch_size}",
            f"guidance: {' → '.join(cfg.guidance.ladder) or 'none'}; filters: {', '.join(a.batch_filters) or 'none'}",
            f"advantage: {a.advantage}" + "".join(f" + {n}" for n in a.active_addons()) + "; surrogates: "
            + ", ".join(f"{k} {getattr(a.surrogate, k).name}" for k in ("policy", "teacher", "hinted"))
            + f"; aggregation {a.agg_mode}; regularizers: {', '.join(a.active_regularizers()) or 'none'}",
            f"computed per step for the pieces: {', '.join(sorted(cfg.needs())) or 'nothing extra'}",
        ]
        console.print("\n".join(lines), highlight=False)
        console.print(f"dry run: the config is valid; {cfg.steps} steps would write to {cfg.output_dir}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def before_after_table(summary: dict[str, dict[str, float]], title: str) -> Table:
    """Every evaluation figure before and after training."""
    table = Table(title=title)
    for col in ("metric", "before", "after"):
        table.add_column(col, justify="right" if col != "metric" else "left")
    for key, after in summary["after"].items():
        before = summary["before"].get(key, float("nan"))
        scale = 1 if key.endswith(("length", "distinct_paths")) else 100
        table.add_row(key.removeprefix("eval/"), f"{scale * before:.1f}", f"{scale * after:.1f}")
    return table


@app.command()
def analyze(
    run_dir: Path = typer.Argument(..., help="a training run's output_dir"),
    k: int | None = typer.Option(None, "-k", min=1, help="pass@k that decides 'solvable before' (default: the "
                                 "samples drawn; at most that)"),
    solved_at: float = typer.Option(0.5, min=0.0, max=1.0, help="pass@1 before at or above which a problem counts "
                                    "as already solved"),
) -> None:
    """Capability-gain analysis: which held-out problems RL compressed, newly solved, or left alone."""
    from guidedrl.eval.capability import CATEGORIES, capability_table, read_report
    from guidedrl.files import write_json

    results = {}
    for before_path in sorted((run_dir / "eval").glob("before_*.json")):
        split = before_path.stem.removeprefix("before_")
        after_path = run_dir / "eval" / f"after_{split}.json"
        if not after_path.exists():
            _fail(f"{after_path} is missing: the run has not finished")
        before, after = (read_report(p)["problems"] for p in (before_path, after_path))
        if not before:
            _fail(f"{before_path}: holds no problems")
        if k is not None and k > before[0]["n"]:
            _fail(f"-k: {k} is more than the {before[0]['n']} samples drawn per problem in {before_path}")
        results[split] = capability_table(before, after, k or before[0]["n"], solved_at)
    if not results:
        _fail(f"{run_dir / 'eval'} holds no before_*.json reports (runs write them when they start)")
    table = Table(title=escape(f"{run_dir}: what training changed, per held-out problem"))
    table.add_column("category")
    for split in results:
        table.add_column(split, justify="right")
    for category in CATEGORIES:
        table.add_row(category, *[f"{r['counts'][category]} ({100 * r['shares'][category]:.0f}%)"
                                  for r in results.values()])
    console.print(table)
    write_json(run_dir / "analysis.json", results)
    console.print(escape(f"written to {run_dir / 'analysis.json'}"), highlight=False)


@app.command()
def runs(root: Path = typer.Argument(Path("runs"), help="a folder of runs (searched recursively), or one run")) -> None:
    """A table of the runs under a folder: method, steps, last reward, held-out pass@1, status."""
    from guidedrl.report.runs import find_runs

    found = find_runs(root) if root.is_dir() else []
    if not found:
        _fail(f"{root}: no run folders (a run folder holds metrics.jsonl or config.yaml)")
    table = Table(title=escape(f"runs under {root}"))
    for col in ("run", "method", "status", "last step", "last reward", "ID pass@1", "OOD pass@1"):
        table.add_column(col, justify="left" if col in ("run", "method", "status") else "right")
    for run in found:
        ident, ood = run.pass_at_1("test_id"), run.pass_at_1("test_ood")
        status = run.status if run.status != "crashed" else f"crashed at step {run.last_step}"
        status += ", damaged files" if run.damaged else ""
        table.add_row(escape(str(run.path.relative_to(root) if run.path != root else run.path)), run.method, status,
                      str(run.last_step),
                      f"{run.steps[-1]['reward']:.3f}" if run.steps and "reward" in run.steps[-1] else "-",
                      f"{100 * ident:.1f}" if ident is not None else "-",
                      f"{100 * ood:.1f}" if ood is not None else "-")
    console.print(table)
    for line in (line for run in found for line in run.damaged):
        console.print(f"damaged: {escape(line)}", highlight=False, soft_wrap=True)


@app.command()
def report(
    run_dirs: list[Path] = typer.Argument(..., help="run folders to compare"),
    out: Path = typer.Option(Path("report.html"), help="the HTML file written (self-contained, opens offline)"),
) -> None:
    """One HTML page comparing runs: training curves, guidance, teacher signal, step time, held-out pass@k."""
    from guidedrl.files import check_output_file
    from guidedrl.report.html import write_report
    from guidedrl.report.runs import label_runs, read_run

    check_output_file(out, "--out")
    found = label_runs([read_run(path) for path in run_dirs])
    damaged = [line for run in found for line in run.damaged]
    if damaged:
        _fail(f"{damaged[0]}" + (f" (and {len(damaged) - 1} more damaged files)" if len(damaged) > 1 else ""))
    empty = [r.name for r in found if not r.records]
    if len(empty) == len(found):
        _fail(f"{', '.join(empty)}: no metrics logged yet (nothing to plot)")
    console.print(escape(f"report written to {write_report(found, out)}"), highlight=False)


@app.command()
def demo(
    world: Path = typer.Option(DEFAULT_WORLD, help="world directory (built if missing)"),
    size: str = typer.Option("default", help="world preset, as for `world build`"),
    world_set: list[str] = typer.Option([], "--world-set", help="world setting override, as `world build --set`"),
    methods: list[str] = typer.Option(["grpo", "ampo"], "--method", help="configs/<method>.yaml to compare"),
    target_problems: int = typer.Option(200, min=1, help="held-out problems of the target class (operand counts "
                                        "the student was not fine-tuned on) in the evaluation"),
    steps: int = typer.Option(60, min=1, help="training steps of every method (same seed, same data order)"),
    configs: Path = typer.Option(Path("configs"), help="directory of the method configs"),
    out: Path = typer.Option(Path("runs/demo"),
                             help="runs are written to OUT/<method> (a previous one is moved aside)"),
    set_: list[str] = typer.Option([], "--set", help="override a key of every method's config"),
    force: bool = typer.Option(False, help="a --world folder holding another world is moved aside (renamed, never "
                               "deleted) and the world built anew"),
) -> None:
    """The main job: build (or reuse) the world, then train the student with each method and compare them on the
    target class (the guidance regime's), in distribution and out of it."""
    from guidedrl.config import TrainConfig
    from guidedrl.data import write_jsonl
    from guidedrl.files import check_output_file, write_json
    from guidedrl.report.comparison import GUIDED, demo_output, run_means
    from guidedrl.trainer.loop import Trainer
    from guidedrl.world.splits import EVAL_SPLITS
    from guidedrl.world.target import target_rows
    from guidedrl.yaml_config import load_config

    def method_configs(target: bool) -> dict[str, TrainConfig]:
        sets = {**({"target": str(out / "target.jsonl")} if target else {}),
                **{split: str(world / "data" / f"{split}.jsonl") for split in EVAL_SPLITS}}
        return {method: load_config(configs / f"{method}.yaml", TrainConfig, [
            f"world={world}", f"steps={steps}", f"output_dir={out / method}", "save_every=0", "eval.every=0",
            f"eval_datasets={json.dumps(sets)}", *set_]) for method in methods}

    cfgs = method_configs(target=True)  # every config checked before any work
    check_output_file(out / "comparison.json", "--out")
    _build_world(world, size, world_set, force, "--world")
    target = target_rows(world, target_problems)
    if target:
        out.mkdir(parents=True, exist_ok=True)
        write_jsonl(out / "target.jsonl", target)
    else:
        cfgs = method_configs(target=False)
        console.print(escape(f"note: {world}'s student was fine-tuned on every training operand count: no target "
                             "class to evaluate (the default world has one)"), highlight=False)
    results = {}
    for method, cfg in cfgs.items():
        console.rule(escape(f"{method}: {steps} steps"))
        summary = Trainer(cfg, console=console, overwrite=True).train()
        results[method] = {**summary, "train": run_means(out / method, (GUIDED, "step_time"))}
    for part in demo_output(results, world, steps, [row["n_operands"] for row in target]):
        console.print(part, highlight=False)
    write_json(out / "comparison.json", results)
    console.print(escape(f"runs in {out}; comparison in {out / 'comparison.json'}"), highlight=False)


if __name__ == "__main__":
    app()
