"""Settings of the embedded world: what ``guidedrl world build`` generates and trains.

The world is an application on top of the library (like the CLI), so its settings live with it and not
in :mod:`guidedrl.config`. Every field enters the build's settings hash.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from guidedrl.world.styles import STYLES
from guidedrl.yaml_config import ConfigError, StrictModel, load_config

Operands = Annotated[int, Field(ge=2)]  # an expression needs an operator
Positive = Annotated[int, Field(ge=1)]


class WorldConfig(StrictModel):
    """The embedded arithmetic world: problems, splits, and the tiny student and teachers trained on them."""

    seed: int = Field(0, description="seed of the problem generator and of every model's training")
    model_size: Literal["micro", "tiny"] = Field("tiny", description="zoo size of student and teachers")
    id_operands: list[Operands] = Field([2, 3, 4], min_length=1, description="operand counts of training and test_id "
                                        "problems (each at least 2)")
    ood_kind: Literal["wide", "longer"] = Field("wide", description=(
        "what makes test_ood different in kind: wide: one operand of each problem is drawn from wide_range (a "
        "number the RL training split never shows in a prompt); longer: only more operands than training"))
    ood_operands: list[Operands] = Field([3], min_length=1, description="operand counts of test_ood problems")
    wide_range: tuple[Positive, Positive] = Field((10, 30), description="wide: the range of the one wide operand "
                                                  "(low <= high)")
    student_wide_share: float = Field(0.12, ge=0, le=1, description=(
        "share of the student's SFT examples that are wide problems (rarely seen: hard, not hopeless)"))
    teacher_wide_share: float = Field(0.5, ge=0, le=1, description=(
        "share of each teacher's SFT examples that are wide problems (the teachers are broader models)"))
    operand_max: int = Field(9, ge=1, description="operands are drawn from 1..operand_max")
    operators: str = Field("+-*", pattern=r"^[-+*]+$", description="operators problems may use (of + - *)")
    max_value: int = Field(99, ge=1, description="every intermediate value stays in [0, max_value]")
    n_train: int = Field(2000, ge=1, description="problems in the RL training split")
    n_test_id: int = Field(200, ge=1, description="held-out in-distribution problems")
    n_test_ood: int = Field(200, ge=1, description="held-out out-of-distribution problems")
    n_sft: int = Field(40000, ge=1, description="problems in the supervised corpus of student and teachers")
    teacher_styles: list[str] = Field(["steps", "rewrite", "words", "running"],
                                      description="one teacher model per solution style")
    student_style: str = Field("steps", description="style of the student's supervised data")
    teacher_steps: int = Field(700, ge=1, description="SFT steps per teacher (until strong)")
    teacher_steps_by_style: dict[str, int] = Field({"rewrite": 2000, "running": 1400, "words": 1400}, description=(
        "SFT steps of the teachers of these styles (the ones with longer solutions learn more slowly)"))
    student_steps: int = Field(500, ge=1, description="SFT steps of the student (weak but not hopeless)")
    student_hint_share: float = Field(0.25, ge=0, le=1,
                                      description="share of the student's SFT prompts that carry the hint")
    student_operands: list[Operands] | None = Field([2, 3], description=(
        "operand counts of the student's hint-free SFT examples (None = all): longer ID problems it practised "
        "only with a hint, so alone it fails them (the all-wrong groups guidance is for) and a hint helps"))
    student_slip_share: float = Field(0.3, ge=0, le=1, description=(
        "share of the student's SFT solutions whose final box miscopies the result (a habit RL can fix)"))
    batch_size: int = Field(64, ge=1, description="SFT batch size")
    lr: float = Field(3e-3, gt=0, description="SFT peak learning rate (warm-up then cosine)")
    pool_samples: int = Field(2, ge=1, description="solutions sampled per training problem per teacher")
    pool_temperature: float = Field(1.0, ge=0, description="sampling temperature of the teacher pool")
    max_new_tokens: int = Field(128, ge=1, description="generation limit for pool and evaluation")
    eval_samples: int = Field(8, ge=1, description="samples per problem in the build's evaluation")
    eval_temperature: float = Field(1.0, ge=0, description="sampling temperature of the build's evaluation")

    @field_validator("wide_range")
    @classmethod
    def _ordered(cls, value: tuple[int, int]) -> tuple[int, int]:
        if value[0] > value[1]:
            raise ValueError(f"low {value[0]} is above high {value[1]}")
        return value

    @model_validator(mode="after")
    def _known_styles(self) -> WorldConfig:
        for style in [*self.teacher_styles, self.student_style]:
            if style not in STYLES:
                raise ValueError(f"unknown style {style!r}; known: {sorted(STYLES)}")
        return self


WORLD_PRESETS: dict[str, dict] = {
    "default": {},
    "micro": {"model_size": "micro", "id_operands": [2, 3], "ood_kind": "longer", "ood_operands": [4],
              "student_wide_share": 0.0, "teacher_wide_share": 0.0, "n_train": 512, "n_test_id": 48,
              "n_test_ood": 48, "n_sft": 8000, "teacher_styles": ["steps", "rewrite"], "teacher_steps": 600,
              "student_steps": 450, "student_operands": None, "teacher_steps_by_style": {}, "student_slip_share": 0.5,
              "lr": 1e-2,
              "pool_samples": 2, "max_new_tokens": 48,
              "eval_samples": 4},
}


def world_preset(size: str, overrides: Sequence[str] = (), **fields: object) -> WorldConfig:
    """A world configuration by preset name, with ``key=value`` overrides (as ``world build --set``) and fields."""
    if size not in WORLD_PRESETS:
        raise ConfigError(f"--size: unknown world size {size!r}; known: {', '.join(sorted(WORLD_PRESETS))}")
    return load_config(None, WorldConfig, overrides, base={**WORLD_PRESETS[size], **fields})
