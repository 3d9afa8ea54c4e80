"""A run's memory plan before anything heavy is loaded: the models' shapes read from their config.json, the
per-process estimate, and the two start-up refusals — a run that cannot fit its device, and lengths beyond a
model's context."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from guidedrl.config import TEACHER_FIELDS, TrainConfig
from guidedrl.memory.estimate import GIB, MemoryEstimate, ModelShape, estimate_memory
from guidedrl.teachers.pool import online_teacher_path
from guidedrl.yaml_config import ConfigError

ROPE_KEYS = ("rope_theta", "rope_scaling")  # config.json keys that recent transformers keep in rope_parameters


def model_config(path: Path | str, overrides: dict[str, Any] | None = None) -> Any:
    """A model folder's transformers config (config.json only; no weights read), with ``overrides`` set on it:
    ``rope_theta`` and ``rope_scaling`` (as config.json spells them) go into ``rope_parameters`` where the
    installed transformers keeps them there."""
    from transformers import AutoConfig
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path}: cannot read the model's config.json: {str(err).splitlines()[0]}") from None
    rope = getattr(config, "rope_parameters", None)
    for key, value in (overrides or {}).items():
        if key in ROPE_KEYS and isinstance(rope, dict):
            rope = {**rope, **(value if key == "rope_scaling" else {"rope_theta": value})}
            config.rope_parameters = rope
        else:
            setattr(config, key, value)
    return config


def pretrained_kwargs(path: Path | str, overrides: dict[str, Any]) -> dict[str, Any]:
    """What ``from_pretrained`` takes to load a model with ``overrides`` on its config (nothing without any)."""
    return {"config": model_config(path, overrides)} if overrides else {}


def context_of(config: Any) -> int | None:
    """The positions a model can attend to: ``max_position_embeddings``, times a rope scaling's factor over the
    original length when one is set (YaRN, linear, dynamic); None when the config does not say."""
    context = getattr(config, "max_position_embeddings", None)
    scaling = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    factor = scaling.get("factor") if isinstance(scaling, dict) else None
    if factor:
        base = scaling.get("original_max_position_embeddings") or context
        return None if base is None else max(int(base * factor), context or 0)
    return context


def lora_parameters(config: Any, r: int, target_modules: list[str] | str) -> int:
    """Adapter parameters LoRA adds: r × (in + out) for every linear layer it targets ("all-linear": all but
    the output head), counted on a meta-device build of the model."""
    import torch
    from transformers import AutoModelForCausalLM
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    head = model.get_output_embeddings()
    targets = None if target_modules == "all-linear" else set(
        [target_modules] if isinstance(target_modules, str) else target_modules)
    total = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module is not head and (
                targets is None or name.rsplit(".", 1)[-1] in targets):
            total += r * (module.in_features + module.out_features)
    return total


def longest_row(cfg: TrainConfig) -> int | None:
    """The longest prompt + response a run makes, when its prompt limit is set (else the model's context)."""
    r = cfg.rollout
    return None if r.max_prompt_length is None else r.max_prompt_length + r.max_new_tokens


def check_context(cfg: TrainConfig, key: str, config: Any) -> None:
    """``max_prompt_length + max_new_tokens`` must fit the model's context (``key`` names the model)."""
    context, r, longest = context_of(config), cfg.rollout, longest_row(cfg)
    if context is None or longest is None:
        return
    if longest > context:
        raise ConfigError(
            f"rollout.max_prompt_length ({r.max_prompt_length}) + rollout.max_new_tokens ({r.max_new_tokens}) = "
            f"{r.max_prompt_length + r.max_new_tokens} tokens exceed the {context}-position context of {key}; "
            "shorten them, or extend the context with model_overrides (e.g. {rope_theta: 40000, "
            "max_position_embeddings: 16384}, as LUFFY's authors did for Qwen2.5-Math, or a rope_scaling)")


def plan(cfg: TrainConfig, model: Path, teachers: dict[str, Path] | None = None, processes: int | None = None,
         gpu_memory_gib: float | None = None) -> MemoryEstimate:
    """The estimate for ``cfg`` from the config.json of its policy (``model``), its scoring teachers (local ones
    by name) and online teachers, after checking every length against their contexts."""
    policy_config = model_config(model, cfg.model_overrides)
    check_context(cfg, "model", policy_config)
    policy = ModelShape.of(policy_config)
    frozen: list[ModelShape] = []
    specs = cfg.teacher_signal.scoring_teachers()
    for name, path in (teachers or {}).items():
        teacher_config = model_config(path, specs[name].model_overrides)
        check_context(cfg, "teacher_signal.path" if name == "teacher" else f"teacher_signal.teachers.{name}",
                      teacher_config)
        frozen.append(ModelShape.of(teacher_config))
    for i, source in enumerate(cfg.guidance.teachers):
        if source.kind == "online" and source.path:
            frozen.append(ModelShape.of(model_config(online_teacher_path(source))))
    needs = cfg.needs()
    t = cfg.teacher_signal
    self_initial = needs & TEACHER_FIELDS and t.source != "model" and t.self_policy == "initial"
    if ("ref_logp" in needs or self_initial) and cfg.lora is None:  # one frozen copy of the initial policy
        frozen.append(policy)
    trainable = (None if cfg.lora is None else
                 lora_parameters(policy_config, cfg.lora.r, cfg.lora.target_modules))
    critic = policy if "values" in needs else None
    return estimate_memory(cfg, policy, tuple(frozen), critic, trainable, gpu_memory_gib, processes)


def require_fit(estimate: MemoryEstimate) -> None:
    """Refuse a run whose estimate exceeds its device's memory, with the table and the setting to change."""
    if estimate.fits:
        return
    largest = estimate.largest()
    raise ConfigError(
        f"memory: the run needs about {estimate.total / GIB:.1f} GiB per process, more than the "
        f"{estimate.limit_gib:g} GiB it has; the largest part is {largest.name} ({largest.bytes / GIB:.1f} GiB): "
        f"change {largest.setting}\n" + "\n".join(estimate.lines()))
