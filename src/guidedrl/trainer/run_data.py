"""A run's prompts: the training rows and their prompt ids, checked for what the config's guidance and teacher
routes read from them, and the held-out sets (the configured ones, or a seeded share of the training rows), every
prompt checked against the model's context."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from transformers import PreTrainedTokenizerBase

from guidedrl.config import TrainConfig
from guidedrl.data import load_rows, validate_rows
from guidedrl.guidance.build import check_guidance_sources
from guidedrl.prompt_length import fit_prompts
from guidedrl.seeding import derive_seed
from guidedrl.teachers.signal import check_routes
from guidedrl.trainer.paths import RunPaths
from guidedrl.yaml_config import ConfigError


@dataclass
class RunData:
    """What a run trains and evaluates on."""

    rows: list[dict]
    prompt_ids: list[list[int]]  # each training row's encoded prompt
    eval_sets: dict[str, list[dict]]  # held-out set name -> its rows (at most eval.max_problems)


def load_run_data(cfg: TrainConfig, paths: RunPaths, tokenizer: PreTrainedTokenizerBase, limit: int | None,
                  console: Console) -> RunData:
    """The dataset (checked before anything else is read) and the held-out sets of a run, prompts over ``limit``
    tokens refused or dropped."""
    def load(path: Path, split: str | None) -> tuple[list[dict], list[list[int]]]:
        rows = validate_rows(load_rows(path, split), str(path))
        rows, ids, dropped = fit_prompts(tokenizer, rows, limit, cfg.rollout.long_prompts, str(path))
        if dropped:
            console.print(escape(f"{path}: dropped {dropped} prompts longer than {limit} tokens"))
        return rows, ids

    rows, ids = load(paths.dataset, cfg.dataset_split)
    check_guidance_sources(cfg.guidance, rows, str(paths.dataset))
    check_routes(cfg.teacher_signal, rows, str(paths.dataset))
    eval_sets = {name: load(path, None)[0][:cfg.eval.max_problems] for name, path in paths.eval_sets.items()}
    data = RunData(rows, ids, eval_sets)
    return data if eval_sets else hold_out(data, cfg, paths.dataset, console)


def hold_out(data: RunData, cfg: TrainConfig, dataset: Path, console: Console) -> RunData:
    """Without held-out sets: ``eval.holdout`` of the training rows (seeded) become the ``holdout`` set, or there
    is no evaluation, and the run says so."""
    share = cfg.eval.holdout
    if share == 0:
        console.print(escape(f"no held-out evaluation: {dataset} is your own data and no eval_datasets are set (set "
                             "eval_datasets, or eval.holdout to hold out a share of the rows)"))
        return data
    order = list(range(len(data.rows)))
    random.Random(derive_seed(cfg.seed, "holdout", 0)).shuffle(order)
    held = set(order[:max(1, round(share * len(order)))])
    if len(held) == len(order):
        raise ConfigError(f"eval.holdout: {share} of {len(order)} rows leaves none to train on")
    keep = [i for i in range(len(data.rows)) if i not in held]
    return RunData([data.rows[i] for i in keep], [data.prompt_ids[i] for i in keep],
                   {"holdout": [data.rows[i] for i in sorted(held)][:cfg.eval.max_problems]})
