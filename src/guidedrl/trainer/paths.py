"""Where a run's model and data come from (the user's paths, or the embedded world's defaults), and loading
a local model folder with errors that name the config key and the path."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guidedrl.config import TrainConfig
from guidedrl.trainer.checkpoint import safetensors_complete
from guidedrl.world.splits import EVAL_SPLITS
from guidedrl.yaml_config import ConfigError

# the files one of which every tokenizer transformers loads from a folder has
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")


@dataclass(frozen=True)
class RunPaths:
    """Resolved, existing paths of the policy, the training data and the held-out sets."""

    model: Path
    dataset: Path
    eval_sets: dict[str, Path]
    teachers: dict[str, Path] = field(default_factory=dict)  # teacher_signal's local teachers, by name

    @classmethod
    def resolve(cls, cfg: TrainConfig) -> RunPaths:
        """Fill unset paths from ``cfg.world``; a path that does not exist is an error naming its key (and, for
        the world's own files, how to build the world)."""
        world = Path(cfg.world)
        given: dict[str, Path] = {}  # config key -> the path it resolves to
        from_world: set[str] = set()

        def take(key: str, value: str | None, default: Path) -> Path:
            path = Path(value) if value else default
            if not value:
                from_world.add(key)
            given[key] = path
            return path

        model = take("model", cfg.model, world / "models" / "student")
        dataset = take("dataset", cfg.dataset, world / "data" / "train.jsonl")
        if cfg.eval_datasets is not None:
            evals = {k: take(f"eval_datasets.{k}", v, Path(v)) for k, v in cfg.eval_datasets.items()}
        elif cfg.dataset is None:  # the world's data: its held-out sets (never for a user's own data)
            evals = {s: take(f"eval_datasets.{s}", None, world / "data" / f"{s}.jsonl")
                     for s in EVAL_SPLITS}
        else:
            evals = {}
        teachers = {name: world_model(spec.path, world) for name, spec in cfg.teacher_signal.scoring_teachers().items()
                    if spec.path is not None}
        for name, path in teachers.items():
            given["teacher_signal.path" if cfg.teacher_signal.path else f"teacher_signal.teachers.{name}.path"] = path
        for key, path in given.items():
            if not path.exists():
                hint = f" (build the world with `guidedrl world build --out {world}`)" if key in from_world else ""
                raise ConfigError(f"{key}: path {path} does not exist{hint}")
        return cls(model, dataset, evals, teachers)


def check_output_dir(cfg: TrainConfig, paths: RunPaths) -> None:
    """``output_dir`` may not be, hold or sit inside anything the run reads (the model, the data, a teacher, the
    world it takes them from): ``--overwrite`` would move that aside, and a run would write into it."""
    inputs = {"model": paths.model, "dataset": paths.dataset, **{f"eval_datasets.{k}": v for k, v in
              paths.eval_sets.items()}, **{f"teacher_signal.teachers.{k}": v for k, v in paths.teachers.items()},
              **{f"guidance.teachers[{i}].path": Path(t.path) for i, t in enumerate(cfg.guidance.teachers)
                 if t.kind == "online" and t.path}}
    world = Path(cfg.world).resolve()
    if any(p is not None and p.resolve().is_relative_to(world) for p in inputs.values()):
        inputs["world"] = world
    out = Path(cfg.output_dir).resolve()
    for key, path in inputs.items():
        if path is None:
            continue
        path = path.resolve()
        relation = ("is" if out == path else "holds" if path.is_relative_to(out)
                    else "is inside" if out.is_relative_to(path) else None)
        if relation is not None:
            raise ConfigError(f"output_dir: {cfg.output_dir} {relation} what {key} names ({path}); a run's folder "
                              "must be apart from what the run reads (--overwrite would move it aside): choose another "
                              "output_dir")


def world_model(path: str, world: Path) -> Path:
    """A model path as given, or else the world's model of that name (``teacher_rewrite``)."""
    given = Path(path)
    return given if given.exists() or not (world / "models" / path).exists() else world / "models" / path


def load_pretrained(loader: Any, path: Path, key: str, **kwargs: Any) -> Any:
    """``loader.from_pretrained(path)`` of a local folder; a missing path, a file, no weights, truncated weights,
    no tokenizer or a folder transformers cannot read is a one-line error naming ``key`` and the path."""
    if not path.exists():
        raise ConfigError(f"{key}: path {path} does not exist")
    if not path.is_dir():
        raise ConfigError(f"{key}: {path} is a file; give the model's folder (config.json, weights, tokenizer)")
    if loader.__name__.endswith("Tokenizer") and not any((path / f).exists() for f in TOKENIZER_FILES):
        raise ConfigError(f"{key}: {path} holds no tokenizer ({', '.join(TOKENIZER_FILES)})")
    if loader.__name__.startswith("AutoModel"):
        weights = list(path.glob("*.safetensors"))
        if not weights:
            raise ConfigError(f"{key}: {path} holds no model weights (model.safetensors)")
        torn = [w for w in weights if not safetensors_complete(w)]
        if torn:
            raise ConfigError(f"{key}: {torn[0]} is truncated or damaged")
    try:
        return loader.from_pretrained(path, **kwargs)
    except (OSError, ValueError, KeyError) as err:
        raise ConfigError(f"{key}: cannot load {path}: {str(err).splitlines()[0]}") from None


def with_lora(model: Any, section: Any, checkpoint: Path | None = None) -> Any:
    """The model with trainable low-rank adapters (peft), fresh or those a checkpoint saved."""
    try:
        from peft import LoraConfig, PeftModel, get_peft_model
    except ImportError:
        raise ConfigError("lora: needs the peft package (pip install guidedrl[lora])") from None
    if checkpoint is not None:
        return PeftModel.from_pretrained(model, checkpoint, is_trainable=True)
    try:
        return get_peft_model(model, LoraConfig(r=section.r, lora_alpha=section.alpha, lora_dropout=section.dropout,
                                                target_modules=section.target_modules, task_type="CAUSAL_LM"))
    except ValueError as err:  # peft: target modules the model does not have
        raise ConfigError(f"lora.target_modules: {str(err).splitlines()[0]}") from None
