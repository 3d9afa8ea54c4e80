"""The demo's comparison as it is printed: methods side by side on held-out sets (before -> after), and the one
sentence that says what the table means."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from rich.table import Table

from guidedrl.trainer.logger import read_metrics

GUIDED = "guidance/teacher/rate"  # the guided-groups column
TARGET = "eval/target/pass@1"  # the target-class column


def run_means(run_dir: Path, keys: tuple[str, ...]) -> dict[str, float]:
    """Means of training metrics over a run's metrics.jsonl (keys a run never logged are left out)."""
    records = [r for r in read_metrics(run_dir / "metrics.jsonl") if "reward" in r]
    return {k: sum(r[k] for r in records) / len(records) for k in keys if records and all(k in r for r in records)}


def comparison_table(results: dict[str, dict], title: str) -> Table:
    """Methods side by side: held-out pass@1 before -> after (target class, ID, OOD), pass@k, diversity, guidance,
    speed."""
    table = Table(title=title)
    any_after = next(iter(results.values()))["after"]
    big_k = max(int(k.rsplit("@", 1)[1]) for k in any_after if k.startswith("eval/test_id/pass@"))
    target = TARGET in any_after
    for col in ("method", *(["target pass@1"] if target else []), "ID pass@1", f"ID pass@{big_k}", "OOD pass@1",
                f"OOD pass@{big_k}", "ID distinct paths", "guided groups", "s/step"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for method, r in results.items():
        b, a, t = r["before"], r["after"], r["train"]
        cell = lambda key: f"{100 * b[key]:.1f} -> {100 * a[key]:.1f}"  # noqa: E731
        table.add_row(method, *([cell(TARGET)] if target else []), cell("eval/test_id/pass@1"),
                      cell(f"eval/test_id/pass@{big_k}"), cell("eval/test_ood/pass@1"),
                      cell(f"eval/test_ood/pass@{big_k}"), f"{a['eval/test_id/distinct_paths']:.2f}",
                      f"{100 * t[GUIDED]:.0f}%" if GUIDED in t else "-", f"{t['step_time']:.2f}")
    return table


def regime_sentence(results: dict[str, dict], target: list[int], steps: int) -> str:
    """What the demo's table means, in one sentence: the target class (``target``: each held-out problem's number
    of operands), and the last method against the first."""
    (first, a), (last, b) = next(iter(results.items())), list(results.items())[-1]
    operands = " or ".join(str(n) for n in sorted(set(target)))
    diff = lambda key: 100 * (b["after"][key] - a["after"][key])  # noqa: E731
    return (f"The target class is {len(target)} held-out problems with {operands} operands, which the student was "
            f"never fine-tuned on and solves {100 * a['before'][TARGET]:.1f}% of the time alone; after {steps} steps "
            f"at one seed, {last} − {first} is {diff(TARGET):+.1f} points of pass@1 there and "
            f"{diff('eval/test_id/pass@1'):+.1f} in distribution overall, which one short run cannot tell from noise "
            f"(the five-seed comparison and its positive control: docs/benchmarks.md, \"The guidance regime\").")


def demo_output(results: dict[str, dict], world: Path, steps: int, target: list[int]) -> list[Table | str]:
    """What the demo prints at its end: the comparison table, then the sentence that says what it means
    (``target``: the number of operands of each held-out target problem; none without a target class)."""
    title = escape(f"{', '.join(results)} on {world}: {steps} steps, seed 0, held-out")
    sentence = [escape(regime_sentence(results, target, steps))] if target and len(results) > 1 else []
    return [comparison_table(results, title), *sentence]
