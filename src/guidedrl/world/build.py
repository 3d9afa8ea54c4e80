"""``guidedrl world build``: problems, tokenizer, student, teachers, teacher pool and evaluation.

Each stage writes its output atomically and is skipped when the output is already there, so an
interrupted build resumes where it stopped and a second build with the same settings is a no-op.
A built world is never deleted: other settings into a folder that holds a world (or anything else) are
refused, unless ``force`` moves that folder aside (renamed ``<out>.old-<time>``) first.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from guidedrl.config import DEFAULT_HINT_TEMPLATE
from guidedrl.data import encode_prompts, load_rows, write_jsonl
from guidedrl.errors import GuidedError, storage_fault
from guidedrl.eval.evaluate import evaluate
from guidedrl.files import DamagedFile, atomic_dir, move_aside, read_json, write_json
from guidedrl.rewards import math_answer_reward
from guidedrl.rollout.engine import SamplingParams
from guidedrl.rollout.hf_engine import HFEngine
from guidedrl.seeding import derive_seed
from guidedrl.world.problems import Expression
from guidedrl.world.settings import WorldConfig
from guidedrl.world.splits import EVAL_SPLITS, make_splits, prompt_for, rows_for
from guidedrl.world.styles import STYLES, hint_for, slip_final_answer
from guidedrl.world.tokenizer import build_tokenizer
from guidedrl.world.zoo import encode_pairs, make_model, sft

STUDENT = "student"


def teacher_name(style: str) -> str:
    """Directory and pool name of the teacher trained on ``style``."""
    return f"teacher_{style}"


def settings_hash(cfg: WorldConfig) -> str:
    """A short digest of every setting that changes what the build produces."""
    return hashlib.sha256(json.dumps(cfg.model_dump(), sort_keys=True).encode()).hexdigest()[:16]


def _save_atomically(path: Path, *parts: PreTrainedModel | PreTrainedTokenizerBase) -> None:
    """``save_pretrained`` every part into a temporary sibling, then rename it into place."""
    with atomic_dir(path, "the world's", "the stages already built are kept (free space, then build again)") as tmp:
        for part in parts:
            part.save_pretrained(tmp)


class WorldFolderError(GuidedError):
    """A world folder a build cannot use: it holds another world (or other files), or cannot be written."""


def claim_world(out: Path, digest: str, force: bool, console: Console, option: str = "--out") -> dict | None:
    """The manifest of the world already in ``out`` when it was built with these settings (None for a new or
    empty folder); any other contents are refused, or with ``force`` moved aside. ``option`` is the command's
    name for ``out`` in messages."""
    if out.exists() and not out.is_dir():
        raise WorldFolderError(f"{option}: {out} is a file, not a folder")
    manifest_path = out / "world.json"
    try:
        manifest = read_json(manifest_path) if manifest_path.exists() else None
    except DamagedFile as err:
        manifest, problem = None, f"{err}"
    else:
        problem = None if manifest is None or manifest.get("hash") == digest else (
            f"{option}: {out} holds a world built with other settings ({manifest.get('hash')}, these are {digest})")
    if problem is None and manifest is None and out.is_dir() and any(out.iterdir()):
        problem = f"{option}: {out} holds files but no world.json, so it is not a world"
    if problem is None:
        return manifest
    if not force:
        raise WorldFolderError(f"{problem}; choose another {option}, or pass --force to move it aside (renamed, never "
                            "deleted) and build anew")
    console.print(f"{escape(problem)}: moved to {escape(str(move_aside(out)))}", highlight=False)
    return None


def _sft_pairs(tokenizer: PreTrainedTokenizerBase, exprs: list[Expression], style: str, hint_share: float,
               slip_share: float, plain_operands: list[int] | None, seed: int, wide: list[Expression] | None = None,
               wide_share: float = 0.0) -> list[tuple[list[int], list[int]]]:
    """(prompt, solution) token pairs in one style. A ``wide_share`` of the examples are wide problems (the
    OOD kind) instead; a share of prompts carries the problem's hint; in-distribution problems whose operand
    count is not in ``plain_operands`` are kept only with a hint (a skill practised only with help); a share of
    solutions miscopies its final answer."""
    rng = random.Random(seed)
    prompts, solutions = [], []
    for i, e in enumerate(exprs):
        is_wide = wide is not None and rng.random() < wide_share
        e = wide[i % len(wide)] if is_wide else e
        hinted = rng.random() < hint_share
        slipped = rng.random() < slip_share
        if not hinted and not is_wide and plain_operands is not None and len(e.operands) not in plain_operands:
            continue
        prompts.append(DEFAULT_HINT_TEMPLATE.format(prompt=prompt_for(e), hint=hint_for(e)) if hinted
                       else prompt_for(e))
        solutions.append(slip_final_answer(STYLES[style](e), rng) if slipped else STYLES[style](e))
    return encode_pairs(tokenizer, prompts, solutions)


def _train(name: str, seed: int, pairs: list[tuple[list[int], list[int]]], steps: int, cfg: WorldConfig,
           tokenizer: PreTrainedTokenizerBase, progress: Progress) -> PreTrainedModel:
    """SFT one zoo model with a progress bar that shows the running loss."""
    task = progress.add_task(name, total=steps, loss=float("nan"))
    model = make_model(tokenizer, cfg.model_size, seed)
    sft(model, pairs, tokenizer.pad_token_id, steps, batch_size=cfg.batch_size, lr=cfg.lr, seed=seed,
        on_step=lambda step, loss: progress.update(task, advance=1, loss=loss))
    return model


def _pool_for(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: list[dict], name: str,
              cfg: WorldConfig) -> list[list[dict]]:
    """``pool_samples`` sampled solutions per row from one teacher, deduplicated, tagged with its name."""
    engine = HFEngine(model, tokenizer.pad_token_id, tokenizer.eos_token_id)
    per_batch = max(1, 512 // cfg.pool_samples)
    out: list[list[dict]] = []
    for start in range(0, len(rows), per_batch):
        part = rows[start:start + per_batch]
        ids = encode_prompts(tokenizer, [r["prompt"] for r in part])
        sampling = SamplingParams(temperature=cfg.pool_temperature, max_new_tokens=cfg.max_new_tokens,
                                  seed=derive_seed(cfg.seed, "world_pool", start))
        texts = engine.generate(ids, cfg.pool_samples, sampling).response_texts(tokenizer)
        for i in range(len(part)):
            unique = dict.fromkeys(texts[i * cfg.pool_samples:(i + 1) * cfg.pool_samples])
            out.append([{"teacher": name, "text": t} for t in unique])
    return out


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description:<16}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TextColumn("loss {task.fields[loss]:.3f}"), TimeElapsedColumn(), console=console)


def build_world(out_dir: str | Path, cfg: WorldConfig, console: Console | None = None, force: bool = False,
                option: str = "--out") -> dict:
    """Build (or resume, or confirm) the world in ``out_dir``; returns its manifest (``world.json``). A folder
    holding another world or other files is refused (:class:`WorldFolderError`), or with ``force`` moved aside."""
    console = console or Console()
    out = Path(out_dir)
    manifest_path = out / "world.json"
    digest = settings_hash(cfg)
    found = claim_world(out, digest, force, console, option)
    if found is not None and found.get("complete"):
        console.print(f"world {escape(str(out))} is up to date (settings {digest}); nothing to do", highlight=False)
        return found
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WorldFolderError(f"{option}: cannot write to {out}: {storage_fault(err) or err.strerror}") from None
    manifest = {"hash": digest, "complete": False, "config": cfg.model_dump(), "seconds": {}}
    if found is not None:  # resuming an interrupted build of these settings: keep the stages' timings
        manifest["seconds"] = found.get("seconds", {})
    write_manifest = lambda: write_json(manifest_path, manifest)  # noqa: E731
    write_manifest()
    torch.manual_seed(cfg.seed)

    tokenizer = build_tokenizer()
    if not (out / "tokenizer").exists():
        _save_atomically(out / "tokenizer", tokenizer)
    splits = make_splits(cfg)
    for split in EVAL_SPLITS:
        if not (out / "data" / f"{split}.jsonl").exists():
            write_jsonl(out / "data" / f"{split}.jsonl", rows_for(splits[split], split))

    names = [STUDENT] + [teacher_name(s) for s in cfg.teacher_styles]
    styles = [cfg.student_style] + list(cfg.teacher_styles)
    with _progress(console) as progress:
        for i, (name, style) in enumerate(zip(names, styles)):
            path = out / "models" / name
            if path.exists():
                continue
            start = time.time()
            is_student = name == STUDENT
            pairs = _sft_pairs(tokenizer, splits["sft"], style, cfg.student_hint_share if is_student else 0.0,
                               cfg.student_slip_share if is_student else 0.0,
                               cfg.student_operands if is_student else None, derive_seed(cfg.seed, "world_sft", i),
                               splits.get("sft_wide"), cfg.student_wide_share if is_student else cfg.teacher_wide_share)
            steps = cfg.student_steps if is_student else cfg.teacher_steps_by_style.get(style, cfg.teacher_steps)
            path.parent.mkdir(parents=True, exist_ok=True)
            _save_atomically(path, _train(name, derive_seed(cfg.seed, "world_model", i), pairs, steps, cfg, tokenizer,
                                          progress), tokenizer)
            manifest["seconds"][f"train_{name}"] = round(time.time() - start, 1)
            write_manifest()

    train_path = out / "data" / "train.jsonl"
    if not train_path.exists():
        start = time.time()
        rows = rows_for(splits["train"], "train")
        pools: list[list[dict]] = [[] for _ in rows]
        for style in cfg.teacher_styles:
            console.print(f"sampling the offline pool of {teacher_name(style)}")
            model = load_model(out, teacher_name(style))
            for pool, extra in zip(pools, _pool_for(model, tokenizer, rows, teacher_name(style), cfg)):
                pool.extend(extra)
        for row, pool in zip(rows, pools):
            row["teacher_solutions"] = pool
        write_jsonl(train_path, rows)
        manifest["seconds"]["teacher_pool"] = round(time.time() - start, 1)
        write_manifest()

    eval_path = out / "eval.json"
    results = read_json(eval_path) if eval_path.exists() else {}
    for name in names:
        for split in EVAL_SPLITS:
            if split in results.get(name, {}):
                continue
            start = time.time()
            console.print(f"evaluating {name} on {split}")
            report = evaluate(HFEngine(load_model(out, name), tokenizer.pad_token_id, tokenizer.eos_token_id),
                              tokenizer, load_rows(out / "data" / f"{split}.jsonl"), split=split,
                              ks=(1, cfg.eval_samples), temperature=cfg.eval_temperature,
                              max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)
            summary = report.summary()
            summary["all_wrong_share"] = sum(p.correct == 0 for p in report.problems) / len(report.problems)
            results.setdefault(name, {})[split] = summary
            write_json(eval_path, results)
            manifest["seconds"][f"eval_{name}_{split}"] = round(time.time() - start, 1)
            write_manifest()
    manifest["complete"] = True
    manifest["pool"] = pool_stats(load_rows(train_path), answer_key="answer")
    write_manifest()
    return manifest


def pool_stats(rows: list[dict], answer_key: str = "answer") -> dict[str, dict[str, float]]:
    """Per teacher: stored solutions per problem and the share of them that verify."""
    counts: dict[str, list[int]] = {}
    for row in rows:
        for sol in row.get("teacher_solutions", []):
            ok = math_answer_reward(prompts=[row["prompt"]], completions=[sol["text"]], answer=[row[answer_key]])[0]
            total = counts.setdefault(sol["teacher"], [0, 0])
            total[0] += 1
            total[1] += int(ok >= 1.0)
    return {t: {"per_problem": n / len(rows), "correct_share": c / n} for t, (n, c) in counts.items()}


def load_model(world_dir: str | Path, name: str) -> PreTrainedModel:
    """A world model loaded back through ``from_pretrained``, in eval mode."""
    return AutoModelForCausalLM.from_pretrained(Path(world_dir) / "models" / name).eval()


def load_tokenizer(world_dir: str | Path) -> PreTrainedTokenizerBase:
    """The world's tokenizer loaded back through ``from_pretrained``."""
    return AutoTokenizer.from_pretrained(Path(world_dir) / "tokenizer")
