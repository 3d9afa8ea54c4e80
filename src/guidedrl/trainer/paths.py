"""Where a run's model and data come from (the user's paths, or the embedded world's defaults), and loading
a local model folder with errors that name the config key and the path."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guidedrl.config import TrainConfig
from guidedrl.trainer.checkpoint import safetensors_complete
from guidedrl.yaml_config import ConfigError


@dataclass(frozen=True)
class RunPaths:
    """Resolved, existing paths of the policy, the training data and the held-out sets."""

    model: Path
    dataset: Path
    eval_sets: dict[str, Path]
    teacher: Path | None = None  # the teacher_signal model

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
            evals = {s: take(f"eval_datasets.{s}", None, world / "data" / f"{s}.jsonl") for s in ("test_id", "test_ood")}
        else:
            evals = {}
        teacher = world_model(cfg.teacher_signal.path, world) if cfg.teacher_signal.path else None
        if teacher is not None:
            given["teacher_signal.path"] = teacher
        for key, path in given.items():
            if not path.exists():
                hint = f" (build the world with `guidedrl world build --out {world}`)" if key in from_world else ""
                raise ConfigError(f"{key}: path {path} does not exist{hint}")
        return cls(model, dataset, evals, teacher)


def world_model(path: str, world: Path) -> Path:
    """A model path as given, or else the world's model of that name (``teacher_rewrite``)."""
    given = Path(path)
    return given if given.exists() or not (world / "models" / path).exists() else world / "models" / path


def load_pretrained(loader: Any, path: Path, key: str, **kwargs: Any) -> Any:
    """``loader.from_pretrained(path)`` of a local folder; no weights, truncated weights or a folder
    transformers cannot read is a one-line error naming ``key`` and the path."""
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
    return get_peft_model(model, LoraConfig(r=section.r, lora_alpha=section.alpha, lora_dropout=section.dropout,
                                            target_modules=section.target_modules, task_type="CAUSAL_LM"))
