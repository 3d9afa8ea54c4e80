"""Fill the measured tables of the README and the docs from the benches' result files, so no figure is typed.

A table lives between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` in README.md or any page under docs/
and is rendered from ``bench/results/NAME.json`` by the function registered for NAME below (a few tables read
other sources: the world's own files, the recipes' estimates, several results at once).

    python bench/render_docs.py            # rewrite every page that holds a table, in place
    python bench/render_docs.py --check    # exit 1 (naming them) if a page is not what the results render to
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

from paired import DRAWS, SEED, Table, by_label, mean_distinct_paths, mean_pass_at_k, paired_diffs

ROOT = Path(__file__).resolve().parents[1]
PAGES = (ROOT / "README.md", ROOT / "docs")  # files, or folders whose *.md pages are searched for tables
BLOCK = re.compile(r"<!-- bench:(\w+) -->.*?<!-- /bench:\1 -->", re.S)
RESULTS = ROOT / "bench" / "results"
WORLD_TEST_ID = ROOT / "worlds" / "default" / "data" / "test_id.jsonl"
UNTRAINED = RESULTS / "untrained.json"  # the untrained student under the headline's evaluation
RENDERERS: dict[str, Callable[[dict], str]] = {}


def renders(name: str) -> Callable[[Callable[[dict], str]], Callable[[dict], str]]:
    def add(fn: Callable[[dict], str]) -> Callable[[dict], str]:
        RENDERERS[name] = fn
        return fn
    return add


def environment_line(env: dict) -> str:
    kernels = f" ({env['cpu_capability']} kernels)" if env.get("cpu_capability") else ""
    return (f"*{env['machine']}{kernels}; torch {env['torch']}, transformers {env['transformers']}"
            + (f", trl {env['trl']}" if env.get("trl") else "") + f"; {env['torch_threads']} torch threads; "
            f"measured {env['date']}.*")


def grpo_step(r: dict) -> str:
    """bench/grpo_step.py: one GRPO step of TRL's GRPOTrainer and of guidedrl, interleaved, with their phases."""
    t, g, s = r["trl"], r["guidedrl"], r["settings"]
    label = "bf16 autocast (its default)" if s.get("trl_bf16") else "fp32"
    label += ", generating with its colocated vLLM" if s.get("trl_generation") == "vllm colocate" else ""
    ours = ", ".join(f"{k} {g[k]:.3f}" for k in ("rollout", "reward", "signals", "update", "sync") if k in g)
    recompute = ("" if s.get("engine", "hf") == "hf" else
                 ", behaviour log-probs " + ("recomputed" if s.get("recompute", True) else "from vLLM"))
    if s.get("rollout_correction"):
        c = s["rollout_correction"]
        recompute += f", rollout correction ({c['level']} level, {c['mode']} above {c['threshold']:g})"
    rows = ["| trainer | median step (s) | where the step goes (median s) |", "|---|---|---|",
            f"| TRL GRPOTrainer, {label} | {t['median_step_s']:.3f} | generate {t['generate']:.3f}, rewards "
            f"{t['reward']:.3f}, loss forward {t['loss_forward']:.3f}, backward + optimizer + rest {t['other']:.3f} |",
            f"| guidedrl, fp32, engine {s.get('engine', 'hf')}{recompute} | {g['median_step_s']:.3f} | {ours} |"]
    work = (f"{r['parameters'] / 1e6:.1f}M-parameter Llama, {s['prompts']} prompts × {s['group']} completions, "
            f"≤ {s['new_tokens']} new tokens, median of {s['steps'] - s['warmup']} steps after {s['warmup']}")
    bound = t["median_step_s"] / (g["median_step_s"] - g["rollout"])  # Amdahl: our step with free generation
    return "\n".join(rows) + (f"\n\n**guidedrl = {r['speedup']:.2f}× TRL's throughput** ({work}); with generation "
                              f"free, at most {bound:.2f}×. ") + environment_line(r["environment"])


for _name in ("grpo_step", "grpo_step_50m", "grpo_step_50m_norecompute", "grpo_step_50m_correction",
              "grpo_step_50m_trl_vllm"):
    renders(_name)(grpo_step)


WORLD = ROOT / "worlds" / "default"
SOURCES: dict[str, Callable[[], dict]] = {  # tables whose data is not a bench result file
    "world": lambda: {"eval": json.loads((WORLD / "eval.json").read_text()),
                      "manifest": json.loads((WORLD / "world.json").read_text())},
    "recipe_memory": lambda: {"recipes": recipe_rows()},  # estimates: computed from the code, never stale
}


def recipe_rows() -> list[dict]:
    """Every recipe's estimate (bench/recipe_memory.py) as plain numbers."""
    from recipe_memory import RECIPES, recipe_estimate
    rows = []
    for recipe in RECIPES:
        cfg, e = recipe_estimate(recipe)
        rows.append({"recipe": recipe.stem, "processes": cfg.memory.processes, "gpu": cfg.memory.gpu_memory_gib,
                     "sharding": cfg.memory.sharding, "parts": {p.name: p.bytes for p in e.parts},
                     "total": e.total})
    return rows


@renders("recipe_memory")
def recipe_memory(r: dict) -> str:
    """The recipes' per-process estimates, part by part (GiB)."""
    gib = 1024 ** 3
    names = [n for n in r["recipes"][0]["parts"] if any(row["parts"][n] for row in r["recipes"])]
    lines = ["| recipe | hardware | " + " | ".join(names) + " | peak |", "|---" * (len(names) + 3) + "|"]
    for row in r["recipes"]:
        hardware = f"{row['processes']} × {row['gpu']:g} GiB" + (f", {row['sharding']}" if row["sharding"] != "none"
                                                                  else "")
        cells = [f"{row['parts'][n] / gib:.1f}" for n in names]
        lines.append(f"| {row['recipe']} | {hardware} | " + " | ".join(cells) + f" | **{row['total'] / gib:.1f}** |")
    return "\n".join(lines) + ("\n\n*Estimates from the recipes and Qwen2.5-Math's published shapes "
                               "(configs/models/), computed when this page is rendered; the peak holds the larger "
                               "of the update and generation phases. Not measured on a GPU.*")


@renders("memory_peak")
def memory_peak(r: dict) -> str:
    """bench/memory_peak.py: each method's step peak at Qwen's vocabulary against full logits and the estimate."""
    mib = 1024 ** 2
    lines = ["| step | forwards | peak rise over the step (MiB) | B×R×V fp32 logits (MiB) | estimate (MiB) |",
             "|---|---|---|---|---|"]
    for s in r["steps"]:
        how = "whole batch, full logits" if s["naive"] else "token budget, logits in chunks"
        lines.append(f"| {s['method']} | {how} | {s['peak_rise_bytes'] / mib:.0f} | {s['full_logits_bytes'] / mib:.0f} "
                     f"| {s['estimate_update_bytes'] / mib:.0f} |")
    first = r["steps"][0]
    return "\n".join(lines) + (f"\n\n*Qwen2-architecture model, 151,936-token vocabulary, 16-wide body; "
                               f"{first['rows']} rows × {first['length']} response tokens; one malloc arena, "
                               "blocks over 64 KiB mapped on their own. " + environment_line(r["environment"])[1:])


@renders("world")
def world(r: dict) -> str:
    """The shipped world's held-out evaluation (its eval.json) and build time (its world.json)."""
    def pct(x: float) -> str:
        return f"{100 * x:.1f}"
    rows = ["| model | ID greedy | ID pass@1 | ID pass@8 | OOD greedy | OOD pass@1 | OOD pass@8 | ID problems all "
            "8 wrong |", "|---|---|---|---|---|---|---|---|"]
    for name, splits in r["eval"].items():
        i, o = splits["test_id"], splits["test_ood"]
        rows.append(f"| {name} | {pct(i['greedy_accuracy'])} | {pct(i['pass_at_k']['1'])} | {pct(i['pass_at_k']['8'])} "
                    f"| {pct(o['greedy_accuracy'])} | {pct(o['pass_at_k']['1'])} | {pct(o['pass_at_k']['8'])} "
                    f"| {100 * i['all_wrong_share']:.0f}% |")
    seconds = r["manifest"]["seconds"]
    train = ", ".join(f"{k.removeprefix('train_')} {v:.0f} s" for k, v in seconds.items() if k.startswith("train_"))
    evals = sum(v for k, v in seconds.items() if k.startswith("eval_"))
    return "\n".join(rows) + (f"\n\nBuild: {sum(seconds.values()):.0f} s of stages on this 2-core machine ({train}; "
                              f"offline pool {seconds.get('teacher_pool', 0):.0f} s; evaluation {evals:.0f} s); "
                              f"settings hash `{r['manifest']['hash']}`.")


@renders("engine_speed")
def engine_speed(r: dict) -> str:
    s = r["settings"]
    growing = all("hf_growing" in m for m in r["results"].values())  # results from before the preallocated cache
    rows = ["| model | parameters | new tokens per row |" + (" built-in, growing cache (tok/s) |" if growing else "")
            + " built-in engine (tok/s) | vLLM (tok/s) |" + (" preallocated / growing |" if growing else "")
            + " vLLM / built-in |", "|---|---|---|---|---|" + ("---|---|" if growing else "") + "---|"]
    for label, m in r["results"].items():
        rows.append(f"| {label} | {m['parameters'] / 1e6:.1f}M | {m['new_tokens']} |"
                    + (f" {m['hf_growing']:.0f} |" if growing else "") + f" {m['hf']:.0f} | {m['vllm']:.0f} |"
                    + (f" {m['cache_speedup']:.2f}× |" if growing else "") + f" {m['vllm_over_hf']:.2f}× |")
    env = r["environment"]
    profiles = [f"- {label}, {engine_names[engine]} ({p['seconds']:.1f} s under cProfile): " + ", ".join(
        f"`{_function(f['function'])}` {100 * f['share']:.0f}%" for f in p["top_own_time"][:4])
        for label, m in r["results"].items() for engine, p in m.get("profile", {}).items()]
    profile = ("\n\nWhere one call's time goes (the four functions with the most own time, share of the call):"
               "\n\n" + "\n".join(profiles)) if profiles else ""
    return "\n".join(rows) + (f"\n\n*{s['prompts']} prompts × {s['samples']} samples per call, median of "
                              f"{s['repeats']} interleaved calls; {env['machine']}; torch {env['torch']}, vLLM "
                              f"{env['vllm']} (CPU build), threads {s.get('vllm_threads_bind', 'nobind')}; "
                              f"{s['threads']} torch threads; measured {env['date']}.*") + profile


engine_names = {"hf": "built-in engine", "hf_growing": "built-in engine, growing cache", "vllm": "vLLM"}


def _function(name: str) -> str:
    """``file:line:function`` of a profile row, or the bare name of a built-in (a torch kernel)."""
    file, _, rest = name.partition(":")
    line, _, function = rest.partition(":")
    if file == "~":
        return function.removeprefix("<built-in method ").removeprefix("<method ").rstrip(">").split(" of ")[0]
    return f"{file}:{function}"


def interval(d: list[float]) -> str:
    """A difference and its 95% interval, in points: ``+1.2 [-0.3, +2.8]``."""
    return f"{100 * d[0]:+.1f} [{100 * d[1]:+.1f}, {100 * d[2]:+.1f}]"


def headline(r: dict) -> str:
    """bench/headline.py: pass@k after training per method, and paired differences to the first method."""
    s, methods = r["settings"], r["methods"]
    ks = s["ks"]
    base = next(iter(methods))
    rows = ["| method (lr) | split | " + " | ".join(f"pass@{k}" for k in ks) + " | distinct correct paths | "
            f"pass@1 − {base} [95% CI] | pass@{ks[-1]} − {base} [95% CI] |",
            "|---|---|" + "---|" * (len(ks) + 3)]
    for split, table in untrained_scores(s).items():
        diffs = paired_diffs(table, r["problems"][base][split], ks)
        rows.append(f"| student, untrained | {split.removeprefix('test_').upper()} | "
                    + " | ".join(f"{100 * mean_pass_at_k(table, k):.1f}" for k in ks)
                    + f" | {mean_distinct_paths(table):.2f} | "
                    + " | ".join(interval(diffs[f"diff_pass@{k}"]) for k in (1, ks[-1])) + " |")
    for method, f in methods.items():
        for split, e in f["splits"].items():
            diffs = [method_diffs(r, method, base, split).get(f"diff_pass@{k}") for k in (1, ks[-1])]
            cells = ["" if d is None else interval(d) for d in diffs]
            rows.append(f"| {method} ({f['lr']}) | {split.removeprefix('test_').upper()} | "
                        + " | ".join(f"{100 * e['pass_at_k'][str(k)]:.1f}" for k in ks)
                        + f" | {e['distinct_paths']:.2f} | {cells[0]} | {cells[1]} |")
    sweep = "; ".join(f"{m}: " + ", ".join(f"lr {lr} → {100 * runs[lr]['train_reward_tail']:.1f}"
                                           for lr in sorted(runs, key=float)) for m, runs in r["sweep"].items())
    env = r["environment"]
    earlier = r.get("swept_before", [])
    before = (f"; {', '.join(earlier)} swept earlier in {' and '.join(Path(p).name for p in s['prior'])}, the same "
              "protocol" if earlier else "")
    before += "".join(kept_scores(m, found, s["seeds"]) for m, found in r.get("scores_kept", {}).items())
    return "\n".join(rows) + (f"\n\n*{s['steps']} steps, seeds {s['seeds']}, {s['problems']} held-out problems per "
                              f"split × {s['samples']} samples at temperature 1; learning rate per method: the best "
                              f"of the rates tried on seed {s['seeds'][0]} by mean training reward over the last "
                              f"fifth of the steps ({sweep}; training reward in %{before}). Intervals: paired "
                              f"crossed bootstrap (seeds resampled, one problem resample shared by every seed), "
                              f"{DRAWS} replicates, seed {SEED}.* " + environment_line(env)
                              + contrasts(r) + over_training(methods, s["steps"])
                              + by_operands(r))


def kept_scores(method: str, found: dict, seeds: list[int]) -> str:
    """Where a method's per-problem scores came from when they were not all trained here."""
    if found["seeds"] == seeds:
        return f"; {method}'s per-problem scores taken from {found['source']}, its rate unchanged"
    new = [s for s in seeds if s not in found["seeds"]]
    return (f"; {method}'s per-problem scores of seeds {found['seeds']} taken from {found['source']} (its rate "
            f"unchanged), seeds {new} trained here")


for _name in ("headline", "headline_guide", "headline_tgpo", "headline_guide_ppo", "headline_self_distill"):
    renders(_name)(headline)


SUMMARY = (("ampo", "grpo", "headline"), ("luffy", "grpo", "headline"), ("ampo", "luffy", "headline"),
           ("guide_grpo", "grpo", "headline_guide"), ("guide_ppo", "ppo", "headline_guide_ppo"),
           ("tgpo", "rkl_distill", "headline_tgpo"), ("tgpo", "grpo", "headline_tgpo"))
SOURCES["summary"] = lambda: {name: json.loads((RESULTS / f"{name}.json").read_text())
                              for name in dict.fromkeys(n for *_, n in SUMMARY) if (RESULTS / f"{name}.json").exists()}


@renders("summary")
def summary(r: dict) -> str:
    """The README's one table: each comparison's paired differences at pass@1 and pass@max(k), in and out of
    distribution, from the comparisons' result files."""
    found = [(a, b, r[n]) for a, b, n in SUMMARY if n in r]
    if not found:
        return "(not measured: the comparisons' result files are missing)"
    top = found[0][2]["settings"]["ks"][-1]
    rows = [f"| paired difference | ID pass@1 | OOD pass@1 | ID pass@{top} | OOD pass@{top} |", "|---|---|---|---|---|"]
    for a, b, result in found:
        diffs = {split: method_diffs(result, a, b, split) for split in ("test_id", "test_ood")}
        lr = {m: result["methods"][m]["lr"] for m in (a, b)}
        rows.append(f"| {a} ({lr[a]}) − {b} ({lr[b]}) | " + " | ".join(
            interval(diffs[split][f"diff_pass@{k}"]) for k in (1, top) for split in ("test_id", "test_ood")) + " |")
    envs = [result["environment"] for result in r.values()]
    machines = "; ".join(sorted({e["machine"] for e in envs}))
    dates = sorted(e["date"] for e in envs)
    s = found[0][2]["settings"]
    return "\n".join(rows) + (f"\n\n*Points, 95% paired crossed-bootstrap intervals; the default world, {s['steps']} "
                              f"steps, seeds {s['seeds']}, each method at the rate it chose on seed {s['seeds'][0]}; "
                              f"{s['problems']} held-out problems per split × {s['samples']} samples at temperature 1. "
                              f"{machines}; torch {envs[0]['torch']}; measured {dates[0]} to {dates[-1]}.*")


# the papers' claims, as the regime's protocol states them: (a − b, set, at least this many points of pass@1)
REGIME_TARGETS = (("ampo − grpo", "target", 10.0), ("ampo − grpo", "test_id", -1.0),
                  ("guide_grpo − grpo", "target", 5.0), ("ampo − luffy", "target", 0.0),
                  ("ampo − luffy", "test_ood", 0.0))


def verdict(d: list[float], bound: float) -> str:
    """A paired difference against a target of at least ``bound`` points: met when the whole interval clears it,
    not met when the whole interval falls short, undecided when the interval holds the bound."""
    low, high = 100 * d[1], 100 * d[2]
    return "met" if low >= bound else "not met" if high < bound else "undecided"


@renders("guidance_regime")
def guidance_regime(r: dict) -> str:
    """bench/guidance_regime.py: the untrained student, the positive control and each method at its chosen rate
    (mean over its seeds) on the target class and the test sets at temperatures 1 and 0.6, with the slip rate on
    test_id; the rate sweep on the first seed; then the paired differences and the targets."""
    s, control = r["settings"], r["control"]
    cols = [("t1", "target/pass@1"), ("t1", "target/greedy"), ("t1", "test_id/pass@1"), ("t1", "test_ood/pass@1"),
            ("t0.6", "target/pass@1"), ("t0.6", "test_id/pass@1"), ("t0.6", "test_ood/pass@1")]
    head = ["| model | lr | seeds | target pass@1 | target greedy | test_id pass@1 | test_ood pass@1 | target pass@1, "
            "T 0.6 | test_id pass@1, T 0.6 | test_ood pass@1, T 0.6 | slip (test_id) |", "|---|" + "---|" * 10]

    def row(name: str, lr: str, seeds: str, found: list[dict]) -> str:
        mean = lambda get: sum(map(get, found)) / len(found)  # noqa: E731
        return (f"| {name} | {lr} | {seeds} | " + " | ".join(f"{mean(lambda f: f['scores'][t][k]):.1f}"
                                                             for t, k in cols)
                + f" | {100 * mean(lambda f: f['slip']):.1f} |")

    rows = [row("untrained student", "—", "—", [r["untrained"]]),
            row(f"positive control: SFT on {control['examples']} problems' teacher_steps solutions", f"{s['lr']:g}",
                "0", [control])]
    rates = r.get("chosen_lr", {})  # a result from before rates were chosen ran every method at the control's
    rows += [row(method, rates.get(method, f"{s['lr']:g}"), ", ".join(runs), list(runs.values()))
             for method, runs in r["methods"].items()]
    rule = ("each method at the rate it chose on the validation set (below)" if r.get("sweep")
            else f"every method at the control's rate, {s['lr']:g}")
    note = (f"\n\nThe control {'passed' if control['passed'] else 'failed'}: target pass@1 {control['gain']:+.1f} "
            f"points (the regime needs {s['control_gain']:+.0f}). {s['target_problems']} held-out target problems and "
            f"the first {min(200, s['target_problems'])} of each test set × {s['samples']} samples; {s['steps']} "
            f"steps; {rule}; the means are over each method's seeds. ")
    if not r["methods"]:
        return "\n".join(head + rows) + note + "No method ran: the regime was not accepted. " + environment_line(
            r["environment"])
    sweep = ["| method | lr | validation pass@1 | target pass@1 | test_id pass@1 | test_ood pass@1 |",
             "|---|" + "---|" * 5]
    for method, tried in r.get("sweep", {}).items():
        for lr, found in tried.items():
            mark = " (chosen)" if lr == rates.get(method) else ""
            sweep.append(f"| {method} | {lr}{mark} | " + " | ".join(
                f"{found[k]:.1f}" for k in ("validation/pass@1", "target/pass@1", "test_id/pass@1", "test_ood/pass@1"))
                + " |")
    swept = sorted({lr for tried in r.get("sweep", {}).values() for lr in tried}, key=float)
    sweep_note = (f"\n\n*The rate sweep, seed {s['seeds'][0]}, temperature 1: every method at every rate it was "
                  f"tried at ({', '.join(swept)}); validation pass@1 on {s.get('validation_problems')} fresh problems "
                  "of the training distribution chooses the rate (ties to the lower).*")
    ks = (1, s["samples"])
    diff_cols = [("t1", "target", 1), ("t1", "target", ks[1]), ("t1", "test_id", 1), ("t1", "test_ood", 1),
                 ("t0.6", "target", 1), ("t0.6", "test_id", 1)]
    diffs = ["| paired difference | seeds | target pass@1 | target pass@" + str(ks[1]) + " | test_id pass@1 | test_ood "
             "pass@1 | target pass@1, T 0.6 | test_id pass@1, T 0.6 |", "|---|" + "---|" * 7]
    for name, c in r["contrasts"].items():
        diffs.append(f"| {name} | {', '.join(c['seeds'])} | "
                     + " | ".join(interval(c[t][split][f"diff_pass@{k}"]) for t, split, k in diff_cols) + " |")
    found = [(name, split, bound, r["contrasts"][name]) for name, split, bound in REGIME_TARGETS
             if name in r["contrasts"]]
    targets = [f"{name} {split} pass@1 ≥ {bound:+.0f}: {verdict(c['t1'][split]['diff_pass@1'], bound)} "
               f"({interval(c['t1'][split]['diff_pass@1'])}, seeds {', '.join(c['seeds'])})"
               for name, split, bound, c in found]
    return ("\n".join(head + rows) + note + environment_line(r["environment"])
            + ("\n\n" + "\n".join(sweep) + sweep_note if swept else "") + "\n\n" + "\n".join(diffs)
            + "\n\n*Points, at temperature 1 unless marked; 95% paired crossed-bootstrap intervals over the seeds both "
            "methods finished and the problems (with one seed, the problems' variation only); each method at its "
            "chosen rate.*" + (" Targets (temperature 1; met: the whole interval clears the bound; not met: it "
                                "falls short; undecided: it holds the bound): " + "; ".join(targets) + "."
                                if targets else ""))


@renders("demo")
def demo(r: dict) -> str:
    """bench/demo.py: what ``make demo`` prints at its end (the demo's own functions), and how long it took."""
    from rich.console import Console

    from guidedrl.report.comparison import demo_output

    console = Console(record=True, width=160, file=io.StringIO())
    for part in demo_output(r["methods"], Path(r["settings"]["world"]), r["steps"], r["target"]):
        console.print(part, highlight=False)
    text = "\n".join(line.rstrip() for line in console.export_text().splitlines())
    return (f"```text\n{text}\n```\n\n`guidedrl demo` took {r['wall_s'] / 60:.1f} min, the world already built. "
            + environment_line(r["environment"]))


@renders("update_share")
def update_share(r: dict) -> str:
    """bench/update_share.py: each kind of token's gradient norm (optim.grad_norm_by_kind) for AMPO and LUFFY."""
    s = r["settings"]
    rows = ["| method | steps | ‖g‖ student's own tokens | ‖g‖ teacher tokens | teacher share | teacher rows / step |",
            "|---|---|---|---|---|---|"]
    for method, parts in r["methods"].items():
        for span, label in (("all", f"1–{s['steps']}"), ("first", "first tenth"), ("last", "last tenth")):
            p = parts[span]
            rows.append(f"| {method} | {label} | {p['policy']:.3f} | {p['teacher']:.3f} | "
                        f"{100 * p['teacher_share']:.0f}% | {p['teacher_rows']:.1f} |")
    return ("\n".join(rows) + f"\n\nMeans over the steps of the pre-clip gradient norm of each kind's policy-gradient "
            f"term; the teacher share is ‖g_teacher‖ / (‖g_teacher‖ + ‖g_own‖). lr {s['lr']:g}, seed {s['seed']}. "
            + environment_line(r["environment"]))


def variant_label(variant: str) -> str:
    """bench/teacher_loss.py's ``surrogate[:teacher]`` as its table names it: ``logp, teacher_steps only``."""
    surrogate, _, pool = variant.partition(":")
    return surrogate + (f", {pool} only" if pool else ", the preset's teachers")


@renders("teacher_loss")
def teacher_loss(r: dict) -> str:
    """bench/teacher_loss.py: AMPO and LUFFY in the guidance regime with the teacher tokens' surrogate or the
    inserted teachers changed, beside their published seed-0 runs, the paired differences, and the training logs."""
    s, g = r["settings"], r["regime"]
    k = g["samples"]
    cols = [("t1", "target/pass@1"), ("t1", "target/greedy"), ("t1", "test_id/pass@1"), ("t1", "test_ood/pass@1"),
            ("t0.6", "target/pass@1")]
    rows = ["| method | teacher tokens' surrogate, inserted teachers | lr | target pass@1 | target greedy | "
            "test_id pass@1 | test_ood pass@1 | target pass@1, T 0.6 | slip (test_id) |", "|---|" + "---|" * 8]
    diffs = [f"| against the published run | target pass@1 | target pass@{k} | test_id pass@1 | test_ood pass@1 | "
             "target pass@1, T 0.6 |", "|---|" + "---|" * 5]
    logs = ["| method | teacher tokens' surrogate, inserted teachers | student's probability of teacher tokens, "
            "first → last tenth | training reward, first → last tenth | inserted solutions by teacher |",
            "|---|" + "---|" * 4]
    for method, m in r["methods"].items():
        runs = {"shaped, the preset's teachers (published)": (m["published"], m.get("log")),
                **{variant_label(v): (found, found["log"]) for v, found in m["variants"].items()}}
        for label, (found, log) in runs.items():
            rows.append(f"| {method} | {label} | {m['lr']} | " + " | ".join(f"{found['scores'][t][key]:.1f}"
                                                                             for t, key in cols)
                        + f" | {100 * found['slip']:.1f} |")
            logs.append(f"| {method} | {label} | " + (" | ".join(
                f"{log[f'{key}/first']:{fmt}} → {log[f'{key}/last']:{fmt}}"
                for key, fmt in (("teacher_prob_mean", ".2f"), ("reward", ".3f")))
                + " | " + ", ".join(f"{t} {100 * v:.0f}%" for t, v in log["selected"].items()) + " |"
                if log else "— | — | — |"))
        for v, found in m["variants"].items():
            d = found["diff"]
            diffs.append(f"| {method}: {variant_label(v)} | " + " | ".join(
                interval(d[t][split][f"diff_pass@{n}"]) for t, split, n in (
                    ("t1", "target", 1), ("t1", "target", k), ("t1", "test_id", 1), ("t1", "test_ood", 1),
                    ("t0.6", "target", 1))) + " |")
    return ("\n".join(rows) + "\n\n" + "\n".join(diffs) + "\n\n" + "\n".join(logs)
            + f"\n\n*Seed {s['seed']}, {g['steps']} steps at each method's chosen rate; {g['target_problems']} "
            f"held-out target problems and the first {min(200, g['target_problems'])} of each test set × {k} samples "
            "at temperature 1 unless marked; points; 95% intervals over the problems (one seed).* "
            + environment_line(r["environment"]))


@renders("tgpo_lambda")
def tgpo_lambda(r: dict) -> str:
    """bench/tgpo_lambda.py: TGPO at each schedule of its label term on the sweep seed, and the chosen one."""
    s = r["settings"]
    rows = ["| λ_0 | δ | λ reaches 0 at step | training reward, last fifth | ID pass@1 | OOD pass@1 | "
            f"ID pass@{s['samples']} | OOD pass@{s['samples']} | "
            "student tokens ≠ teacher's argmax, first → last tenth |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name, t in r["tried"].items():
        a, mark = t["after"], " (chosen)" if name == r["chosen"] else ""
        zero = "never" if t["zero_at"] is None else f"{t['zero_at']:.0f}"
        rows.append(f"| {t['coef']:g}{mark} | {t['decay']:g} | {zero} | {100 * t['train_reward_tail']:.1f} | "
                    + " | ".join(f"{100 * a[f'eval/test_{split}/pass@{k}']:.1f}" for k in (1, s["samples"])
                                 for split in ("id", "ood"))
                    + f" | {100 * t['mismatch'][0]:.0f}% → {100 * t['mismatch'][-1]:.0f}% |")
    return "\n".join(rows) + (f"\n\n*configs/tgpo.yaml, lr {s['lr']:g}, seed {s['seed']}, {s['steps']} steps; "
                              f"{s['problems']} held-out problems per split × {s['samples']} samples at temperature "
                              f"1.* " + environment_line(r["environment"]))


def trace(r: dict) -> str:
    """bench/trace.py: a method's training logs per tenth of the steps at each rate of the sweep."""
    s = r["settings"]
    size = s["steps"] // 10
    names = {"reward": "training reward", "all_wrong": "groups whose samples all fail", "guided": "groups guided",
             "teacher_prob": "student's probability of teacher tokens"}
    rows = ["| lr | per tenth of the steps | " + " | ".join(f"{i * size + 1}–{(i + 1) * size}" for i in range(10))
            + " | ID / OOD pass@1 after |", "|---|---|" + "---|" * 11]
    for lr, t in sorted(r["traced"].items(), key=lambda item: float(item[0])):
        after = f"{100 * t['after']['eval/test_id/pass@1']:.1f} / {100 * t['after']['eval/test_ood/pass@1']:.1f}"
        for i, key in enumerate(k for k in names if k in t):
            cells = " | ".join(f"{100 * v:.0f}%" if key != "teacher_prob" else f"{v:.2f}" for v in t[key])
            rows.append(f"| {lr if i == 0 else ''} | {names[key]} | {cells} | {after if i == 0 else ''} |")
    ablation = f" with {', '.join(f'`{o}`' for o in s['set'])}" if s.get("set") else " (the headline's sweep runs)"
    return "\n".join(rows) + (f"\n\n*configs/{s['method']}.yaml{ablation}, seed {s['seed']}, {s['steps']} steps; "
                              f"{s['problems']} held-out problems per split × {s['samples']} samples.* "
                              + environment_line(r["environment"]))


for _name in ("trace_ampo", "trace_ampo_plain", "trace_ampo_gamma1"):
    renders(_name)(trace)


def method_diffs(r: dict, a: str, b: str, split: str) -> dict[str, list[float]]:
    """Paired differences a − b on a split, recomputed from the result's per-problem scores with bench/paired.py's
    interval (not the figures stored at training time, which older files computed with a superseded bootstrap);
    none for a method against itself."""
    if a == b:
        return {}
    return paired_diffs(r["problems"][a][split], r["problems"][b][split], r["settings"]["ks"])


def contrasts(r: dict) -> str:
    """Paired differences between two methods other than the baseline (bench/headline.py --contrasts)."""
    lines = [f"- {name}: " + "; ".join(f"{split.removeprefix('test_').upper()} " + ", ".join(
        f"{key.removeprefix('diff_')} {interval(d)}" for key, d in method_diffs(r, *name.split(" − "), split).items())
        for split in splits) for name, splits in r.get("contrasts", {}).items()]
    return "\n\nPaired differences between other methods (95% CI):\n\n" + "\n".join(lines) if lines else ""


def over_training(methods: dict, steps: int) -> str:
    """Per tenth of training (seed mean): the share of groups whose samples all failed, the share guided, how
    hints fared, the student/teacher token mismatch; and each method's step time."""
    if not all("over_training" in f for f in methods.values()):
        return ""
    size = steps // 10
    rows = ["| method | share, mean over seeds | " + " | ".join(
        f"steps {i * size + 1}–{(i + 1) * size}" for i in range(10)) + " |", "|---|---|" + "---|" * 10]
    names = {"all_wrong": "groups whose on-policy samples all fail", "guided": "groups guided",
             "rescued": "hinted groups with a correct sample", "hint_accuracy": "hinted samples correct",
             "mismatch": "student tokens ≠ the teacher's argmax"}
    for method, f in methods.items():
        for key, curve in f["over_training"].items():
            if key in names:
                rows.append(f"| {method} | {names[key]} | " + " | ".join(f"{100 * v:.0f}%" for v in curve) + " |")
    times = ", ".join(f"{m} {sum(f['over_training']['step_time']) / 10:.2f} s" for m, f in methods.items())
    return "\n\n" + "\n".join(rows) + f"\n\nStep time (median per tenth, mean of the tenths and seeds): {times}."


def untrained_scores(settings: dict) -> dict[str, Table]:
    """The untrained student's per-problem scores (bench/untrained.py) at a result's seeds, where they were
    measured alike (same problems and samples, every seed of the result); else none."""
    if not UNTRAINED.exists():
        return {}
    u = json.loads(UNTRAINED.read_text())
    alike = all(u["settings"][k] == settings[k] for k in ("samples", "problems"))
    if not alike or not set(settings["seeds"]) <= set(u["settings"]["seeds"]):
        return {}
    picks = [u["settings"]["seeds"].index(seed) for seed in settings["seeds"]]
    return {split: [tables[i] for i in picks] for split, tables in u["problems"]["student"].items()}


def by_operands(r: dict) -> str:
    """In-distribution pass@1 and pass@max(k) by the problems' number of operands (the world's 4-operand problems
    are the ones the student fails alone), with paired differences to the first method on each cut; the untrained
    student (bench/untrained.py, same problems and evaluation seeds) first, where it was measured alike."""
    if "problems" not in r:
        return ""
    s = r["settings"]
    rows = [json.loads(line) for line in WORLD_TEST_ID.read_text().splitlines()][:s["problems"]]
    labels, ks = [row["n_operands"] for row in rows], s["ks"]
    tables = {m: scores["test_id"] for m, scores in r["problems"].items()}
    base, untrained = next(iter(tables)), untrained_scores(s)
    if untrained:
        tables = {"student, untrained": untrained["test_id"], **tables}
    cuts = {m: by_label(table, labels) for m, table in tables.items()}
    lines = [f"| method | ID problems | pass@1 | pass@{ks[-1]} | pass@1 − {base} [95% CI] | "
             f"pass@{ks[-1]} − {base} [95% CI] |", "|---|---|---|---|---|---|"]
    for m, cut in cuts.items():
        for label, table in cut.items():
            diffs = paired_diffs(table, cuts[base][label], ks) if m != base else {}
            cells = [interval(diffs[f"diff_pass@{k}"]) if diffs else "" for k in (1, ks[-1])]
            lines.append(f"| {m} | {label} operands ({len(table[0])}) | {100 * mean_pass_at_k(table, 1):.1f} | "
                         f"{100 * mean_pass_at_k(table, ks[-1]):.1f} | {cells[0]} | {cells[1]} |")
    return "\n\nIn distribution, by the number of operands (problems in brackets):\n\n" + "\n".join(lines)


def render(text: str) -> str:
    def fill(match: re.Match) -> str:
        name = match.group(1)
        path = RESULTS / f"{name}.json"
        if name in SOURCES:
            body = RENDERERS[name](SOURCES[name]())
        else:
            body = (RENDERERS[name](json.loads(path.read_text())) if path.exists()
                    else f"(not measured: {path.name} is missing)")
        return f"<!-- bench:{name} -->\n{body}\n<!-- /bench:{name} -->"
    return BLOCK.sub(fill, text)


def pages() -> list[Path]:
    """Every page that holds a table: README.md and the docs' Markdown pages."""
    found = []
    for place in PAGES:
        for path in sorted(place.rglob("*.md")) if place.is_dir() else [place]:
            if BLOCK.search(path.read_text()):
                found.append(path)
    return found


def stale() -> list[Path]:
    """The pages whose tables are not what the result files render to."""
    return [path for path in pages() if render(text := path.read_text()) != text]


def update() -> list[Path]:
    """Rewrite every page's tables from the result files (a bench's ``--update-docs`` calls this); returns the
    pages that changed."""
    changed = []
    for path in pages():
        text = path.read_text()
        if (new := render(text)) != text:
            path.write_text(new)
            changed.append(path)
    return changed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    if args.check:
        old = stale()
        for path in old:
            print(f"stale: {path.relative_to(ROOT)} (run python bench/render_docs.py)", file=sys.stderr)
        sys.exit(1 if old else 0)
    for path in update():
        print(f"rendered {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
