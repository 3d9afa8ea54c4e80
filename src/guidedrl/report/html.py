"""``guidedrl report``: one self-contained HTML page comparing runs (figures embedded as PNG data, no network).

Each figure is drawn only when at least one run has its data, and says how many series it holds
(``data-series``), so an empty plot never reaches the page.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from guidedrl.eval.capability import CATEGORIES, capability_table  # noqa: E402
from guidedrl.eval.metrics import mean_pass_at_k  # noqa: E402
from guidedrl.files import write_text  # noqa: E402
from guidedrl.report.runs import Run  # noqa: E402

PHASES = ("rollout", "reward", "guidance", "signals", "update")
Figure = tuple[str, str, int]  # title, PNG data URI, number of series


def _png(fig: plt.Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def line_figure(runs: Sequence[Run], title: str, keys: Sequence[str], ylabel: str) -> Figure | None:
    """Metrics over training steps, one line per run and key; None when no run logged any of the keys."""
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    series = 0
    for run in runs:
        for key in keys:
            points = run.series(key)
            if points:
                ax.plot(*zip(*points), label=f"{run.name}: {key}" if len(keys) > 1 else run.name)
                series += 1
    if not series:
        plt.close(fig)
        return None
    ax.set(title=title, xlabel="step", ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return title, _png(fig), series


def prefixed_keys(runs: Sequence[Run], prefix: str) -> list[str]:
    """Every metric key starting with ``prefix`` that some run logged (e.g. per-teacher selections)."""
    return sorted({k for run in runs for r in run.steps for k in r if k.startswith(prefix)})


def step_time_figure(runs: Sequence[Run]) -> Figure | None:
    """Mean seconds per phase of a step, stacked, one bar per run."""
    timed = [(run, {p: _mean(run, f"time/{p}") for p in PHASES}) for run in runs if run.series("step_time")]
    if not timed:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    bottom = [0.0] * len(timed)
    for phase in PHASES:
        heights = [t[phase] for _, t in timed]
        ax.bar([r.name for r, _ in timed], heights, bottom=bottom, label=phase)
        bottom = [b + h for b, h in zip(bottom, heights)]
    ax.set(title="step time split", ylabel="seconds per step (mean)")
    ax.legend(fontsize=7)
    return "step time split", _png(fig), len(timed)


def _mean(run: Run, key: str) -> float:
    values = [v for _, v in run.series(key)]
    return sum(values) / len(values) if values else 0.0


def counts(report: dict) -> list[tuple[int, int]]:
    """(samples, correct) per problem of an evaluation report."""
    return [(p["n"], p["correct"]) for p in report["problems"]]


def pass_at_k_figure(runs: Sequence[Run], split: str) -> Figure | None:
    """pass@k for k = 1..n on one held-out split, before (dashed) and after training (solid)."""
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    series = 0
    for run in runs:
        for tag, style in (("before", "--"), ("after", "-")):
            report = run.evals.get(tag, {}).get(split)
            if not report or not report["problems"]:
                continue
            n = min(p["n"] for p in report["problems"])
            ks = list(range(1, n + 1))
            ax.plot(ks, [100 * mean_pass_at_k(counts(report), k) for k in ks], style, label=f"{run.name} {tag}")
            series += 1
    if not series:
        plt.close(fig)
        return None
    ax.set(title=f"held-out pass@k, {split}", xlabel="k", ylabel="pass@k (%)", xscale="log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return f"pass@k {split}", _png(fig), series


def capability_figure(runs: Sequence[Run], split: str) -> Figure | None:
    """Guide's lens: per held-out problem, already solved / compressed / capability gain / not improved /
    unsolved, grouped by run."""
    tables = []
    for run in runs:
        before, after = run.evals.get("before", {}).get(split), run.evals.get("after", {}).get(split)
        if before and after and before["problems"]:
            k = before["problems"][0]["n"]
            tables.append((run, capability_table(before["problems"], after["problems"], k)))
    if not tables:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    width = 0.8 / len(tables)
    for i, (run, table) in enumerate(tables):
        ax.bar([c + i * width for c in range(len(CATEGORIES))], [table["counts"][c] for c in CATEGORIES], width,
               label=run.name)
    ax.set_xticks([c + 0.4 - width / 2 for c in range(len(CATEGORIES))], [c.replace("_", " ") for c in CATEGORIES],
                  fontsize=7)
    ax.set(title=f"what training changed, {split}", ylabel="problems")
    ax.legend(fontsize=7)
    return f"capability {split}", _png(fig), len(tables)


def config_diff(runs: Sequence[Run]) -> list[tuple[str, list[str]]]:
    """Dotted config keys whose values differ between the runs, with each run's value."""
    def flat(data: dict, prefix: str = "") -> dict[str, str]:
        out: dict[str, str] = {}
        for key, value in data.items():
            name = f"{prefix}{key}"
            out.update(flat(value, f"{name}.") if isinstance(value, dict) and value else {name: json.dumps(value)})
        return out
    flats = [flat(r.config) for r in runs]
    keys = sorted(set().union(*flats))
    skip = ("output_dir", "plugins")
    return [(k, [f.get(k, "–") for f in flats]) for k in keys
            if len({f.get(k) for f in flats}) > 1 and not k.startswith(skip)]


def figures(runs: Sequence[Run]) -> list[Figure]:
    """Every figure some run has data for, in reading order."""
    makers: list[Callable[[], Figure | None]] = [
        lambda: line_figure(runs, "training reward", ["reward"], "mean reward"),
        lambda: line_figure(runs, "groups with no signal", ["all_wrong", "all_right"], "share of groups"),
        lambda: line_figure(runs, "guidance and hint rates", ["guidance/teacher/rate", "guidance/hint/rate"],
                            "share of groups"),
        lambda: line_figure(runs, "selections per teacher", prefixed_keys(runs, "guidance/teacher/selected/"),
                            "solutions inserted"),
        lambda: line_figure(runs, "comprehension scores",
                            ["guidance/teacher/score_selected", "guidance/teacher/score_rejected"], "score"),
        lambda: line_figure(runs, "student–teacher gap",
                            ["teacher_signal/mismatch_ratio", "teacher_signal/reverse_kl"], "value"),
        lambda: line_figure(runs, "entropy", ["entropy"], "nats per token"),
        lambda: step_time_figure(runs),
        *[(lambda s=s: pass_at_k_figure(runs, s)) for s in _splits(runs)],
        *[(lambda s=s: capability_figure(runs, s)) for s in _splits(runs)],
    ]
    return [f for f in (make() for make in makers) if f is not None]


def _splits(runs: Sequence[Run]) -> list[str]:
    return sorted({split for run in runs for by_split in run.evals.values() for split in by_split})


def render(runs: Sequence[Run]) -> str:
    """The whole page: a table of the runs, their benchmark results, the figures, the config differences."""
    esc = html.escape
    rows = "".join(
        f"<tr><td>{esc(r.name)}</td><td>{esc(r.method)}</td><td>{esc(r.status)}</td><td>{r.last_step}</td>"
        f"<td>{_fmt(r.steps[-1].get('reward') if r.steps else None)}</td><td>{_fmt(r.pass_at_1('test_id'), 100)}</td>"
        f"<td>{_fmt(r.pass_at_1('test_ood'), 100)}</td></tr>" for r in runs)
    figs = "".join(f'<figure data-plot="{esc(title)}" data-series="{n}"><img alt="{esc(title)}" src="{uri}">'
                   f"<figcaption>{esc(title)}</figcaption></figure>" for title, uri, n in figures(runs))
    diff = config_diff(runs)
    diff_rows = "".join(f"<tr><td>{esc(k)}</td>" + "".join(f"<td>{esc(v)}</td>" for v in values) + "</tr>"
                        for k, values in diff)
    head = "".join(f"<th>{esc(r.name)}</th>" for r in runs)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>guidedrl report</title>
<style>body{{font-family:sans-serif;margin:24px;color:#222}}table{{border-collapse:collapse;margin:12px 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;font-size:13px}}figure{{display:inline-block;margin:8px}}
figcaption{{font-size:12px;text-align:center}}</style></head><body>
<h1>guidedrl report: {len(runs)} run(s)</h1>
<table><tr><th>run</th><th>method</th><th>status</th><th>last step</th><th>last reward</th>
<th>ID pass@1</th><th>OOD pass@1</th></tr>{rows}</table>
{benchmark_table(runs)}
{figs}
<h2>config differences</h2>
{'<table><tr><th>key</th>' + head + '</tr>' + diff_rows + '</table>' if diff else '<p>none</p>'}
</body></html>"""


def benchmark_table(runs: Sequence[Run]) -> str:
    """The ``eval --benchmarks`` results the runs hold: a row per benchmark and per group mean, a column per run
    and tag (score in %, with its metric); empty when no run holds one."""
    esc = html.escape
    columns = [(run, tag, result) for run in runs for tag, result in sorted(run.benchmarks.items())]
    if not columns:
        return ""
    names = list(dict.fromkeys(name for _, _, result in columns for name in result["benchmarks"]))
    groups = list(dict.fromkeys(group for _, _, result in columns for group in result.get("groups", {})))

    def cell(found: dict | None) -> str:
        if found is None:
            return "<td>–</td>"
        return f"<td>{100 * found['score']:.1f} ({esc(found.get('metric', 'mean'))})</td>"

    head = "".join(f"<th>{esc(run.name)} ({esc(tag)})</th>" for run, tag, _ in columns)
    rows = "".join(f"<tr><td>{esc(name)}</td>" + "".join(cell(r["benchmarks"].get(name)) for _, _, r in columns)
                   + "</tr>" for name in names)
    rows += "".join(f"<tr><th>{esc(group)} average</th>" + "".join(cell(r.get("groups", {}).get(group))
                                                              for _, _, r in columns) + "</tr>" for group in groups)
    return f"<h2>benchmarks</h2>\n<table data-table=\"benchmarks\"><tr><th>benchmark</th>{head}</tr>{rows}</table>"


def _fmt(value: float | None, scale: float = 1.0) -> str:
    return "–" if value is None else f"{scale * value:.3g}"


def write_report(runs: Sequence[Run], out: Path) -> Path:
    """The page written to ``out`` atomically (no half page after a kill or a full disk)."""
    write_text(out, render(runs))
    return out
