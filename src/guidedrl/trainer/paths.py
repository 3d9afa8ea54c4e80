"""Where a run's model and data come from: the user's paths, or the embedded world's defaults."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from guidedrl.config import TrainConfig
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
        """Fill unset paths from ``cfg.world``; a path that does not exist is an error naming its key."""
        world = Path(cfg.world)
        model = Path(cfg.model) if cfg.model else world / "models" / "student"
        dataset = Path(cfg.dataset) if cfg.dataset else world / "data" / "train.jsonl"
        evals = ({k: Path(v) for k, v in cfg.eval_datasets.items()} if cfg.eval_datasets is not None else
                 {s: world / "data" / f"{s}.jsonl" for s in ("test_id", "test_ood")})
        teacher = world_model(cfg.teacher_signal.path, world) if cfg.teacher_signal.path else None
        hint = "" if cfg.model and cfg.dataset else f" (build the world with `guidedrl world build --out {world}`)"
        for key, path in [("model", model), ("dataset", dataset), ("teacher_signal.path", teacher),
                          *((f"eval_datasets.{k}", p) for k, p in evals.items())]:
            if path is not None and not path.exists():
                raise ConfigError(f"{key}: path {path} does not exist{hint}")
        return cls(model, dataset, evals, teacher)


def world_model(path: str, world: Path) -> Path:
    """A model path as given, or else the world's model of that name (``teacher_rewrite``)."""
    given = Path(path)
    return given if given.exists() or not (world / "models" / path).exists() else world / "models" / path
