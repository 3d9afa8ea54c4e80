"""The guidance a config asks for: none, one strategy, or a ladder of them."""

from __future__ import annotations

from guidedrl.config import GuidanceConfig
from guidedrl.guidance.base import Guidance, GuidanceContext, Ladder
from guidedrl.registry import GUIDANCE, TEACHER_POOLS
from guidedrl.yaml_config import ConfigError


def build_guidance(cfg: GuidanceConfig, ctx: GuidanceContext) -> Guidance | None:
    """Strategies in ladder order, sharing one teacher pool; None when the ladder is empty (GRPO)."""
    if not cfg.ladder:
        return None
    pools = [TEACHER_POOLS.get(source.kind)(source, source.max_new_tokens or ctx.sampling.max_new_tokens, ctx.seed,
                                            ctx.precision, ctx.cache_dir)
             for source in cfg.teachers]
    steps: list[Guidance] = [GUIDANCE.get(name)(cfg, ctx, pools) for name in cfg.ladder]
    return steps[0] if len(steps) == 1 else Ladder(steps)


def check_guidance_sources(cfg: GuidanceConfig, rows: list[dict], source: str) -> None:
    """A ladder with ``hint`` needs hints (a ``hint`` column, or teacher solutions to take them from); one with
    ``teacher`` needs solutions (a ``teacher_solutions`` column, or an online teacher): else the run would
    silently be GRPO; an offline teacher named in ``guidance.teachers`` must be one the data holds."""
    online = any(t.kind != "offline" for t in cfg.teachers)
    if "hint" in cfg.ladder and not online and cfg.hint_writer is None and not any(
            row.get("hint") or row.get("teacher_solutions") for row in rows):
        raise ConfigError(f"guidance.ladder: hint needs hints, but {source} has no 'hint' column and no "
                          "teacher_solutions to take them from (nor does guidance.teachers name an online teacher)")
    if "teacher" in cfg.ladder and not online and not any(row.get("teacher_solutions") for row in rows):
        raise ConfigError(f"guidance.ladder: teacher needs solutions, but {source} has no 'teacher_solutions' "
                          "column (nor does guidance.teachers name an online teacher)")
    for i, teacher in enumerate(cfg.teachers if cfg.ladder else []):
        if teacher.kind == "offline":
            check_teacher_names(teacher.teachers, rows, source, f"guidance.teachers[{i}].teachers")


def check_teacher_names(names: list[str] | None, rows: list[dict], source: str, key: str) -> None:
    """Every teacher ``names`` lists (None: all) has solutions in the data's ``teacher_solutions``."""
    stored = {s["teacher"] for row in rows for s in row.get("teacher_solutions", [])}
    unknown = sorted(set(names or ()) - stored)
    if unknown:
        raise ConfigError(f"{key}: no teacher {unknown[0]!r} in {source}'s teacher_solutions; its teachers: "
                          f"{', '.join(sorted(stored)) or 'none'}")
