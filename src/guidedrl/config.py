"""Every training-configuration section as a pydantic model: the one place where defaults live.

YAML files are validated against these models by :func:`guidedrl.yaml_config.load_config`; an unknown
key, a wrong type or a name no registered piece answers to is an error that names the key. Pieces
chosen by name (advantage estimators, surrogates, regularizers, guidance strategies, rewards, ...) are
checked against their registry in :mod:`guidedrl.registry`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import Field, ValidationInfo, field_validator, model_validator

from guidedrl.config_checks import SEED_MAX, device_spec, keyword_reward, template_fields
from guidedrl.registry import (
    ADVANTAGE_ADDONS,
    ADVANTAGES,
    BATCH_FILTERS,
    ENGINES,
    GUIDANCE,
    REGULARIZERS,
    SURROGATES,
    TEACHER_POOLS,
    load_plugin,
    raised,
)
from guidedrl.yaml_config import StrictModel

AggMode = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"]
AGG_MODES: tuple[str, ...] = get_args(AggMode)
TeacherTokens = Literal["all", "disagree", "high_entropy", "low_entropy"]
TEACHER_TOKEN_SETS: tuple[str, ...] = get_args(TeacherTokens)
DEFAULT_HINT_TEMPLATE = "{prompt}hint: {hint}\n"
Beta = Annotated[float, Field(ge=0, lt=1)]
TEACHER_FIELDS = frozenset({"teacher_logp", "teacher_label", "teacher_topk", "old_label_logp", "teacher_tokens"})
# keys a resumed run may change (everything else must equal the recorded config: the run stays one run)
MAY_CHANGE_ON_RESUME = ("steps", "eval", "log_every", "save_every", "keep_checkpoints", "report_to")


class VLLMSection(StrictModel):
    """Settings of the colocated vLLM engine (``rollout.engine: vllm``); the CPU build reads the same ones."""

    gpu_memory_utilization: float = Field(0.3, gt=0, le=1, description="share of the accelerator's memory vLLM "
                                          "may take for weights and KV cache (the trainer needs the rest; on the "
                                          "CPU build, of host memory)")
    enforce_eager: bool | None = Field(None, description="no CUDA graphs / compilation (None: eager on a CPU, "
                                       "graphs on a GPU)")
    prefix_caching: bool = Field(True, description="share the KV cache of a prompt's prefix among its G samples")
    max_model_len: int | None = Field(None, ge=1, description="longest prompt + response vLLM holds (None: "
                                      "rollout.max_prompt_length + max_new_tokens, at most the model's context)")
    sleep_mode: bool | None = Field(None, description="free vLLM's GPU memory (weights and KV cache) while the "
                                    "policy trains; the weight sync wakes it (None: on with CUDA, off on a CPU)")


class RolloutConfig(StrictModel):
    """How responses are sampled: G per prompt, from the current policy."""

    engine: str = Field("hf", description="rollout engine: a key of guidedrl.registry.ENGINES (hf: transformers "
                        "with a KV cache; vllm: a colocated vLLM, weights synced after every update)")
    vllm: VLLMSection = Field(default_factory=VLLMSection, description="settings of engine vllm")
    prompts_per_step: int = Field(8, ge=1, description="prompts sampled per training step")
    group_size: int = Field(8, ge=2, description="G: responses per prompt (a group of 1 has no baseline)")
    temperature: float = Field(1.0, gt=0, description="sampling temperature, also used by the training forward")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling; behaviour log-probs are untruncated")
    recompute_behaviour_logp: bool | None = Field(None, description="recompute the student's behaviour log-probs "
                                                  "with a no-grad training forward before the update (None: on "
                                                  "unless precision is fp32 and the engine is hf, where sampler "
                                                  "and training forward agree exactly)")
    max_new_tokens: int = Field(64, ge=1, description="response length limit")
    max_prompt_length: int | None = Field(None, ge=1, description="longest prompt in tokens (None: the model's "
                                          "context minus max_new_tokens); checked when the data is loaded")
    kv_cache_tokens: int | None = Field(262_144, ge=1, description="built-in engine: rows × (prompt + "
                                        "max_new_tokens) positions decoded at once, the bound of its KV cache "
                                        "(rollouts, hinted re-rolls, online teachers, evaluation; None: a call's "
                                        "prompts all together)")
    long_prompts: Literal["error", "drop"] = Field("error", description="a prompt over max_prompt_length: an error "
                                                   "naming the row, or dropped and counted")

    _engine = field_validator("engine")(lambda v: ENGINES.check(v))


class RewardSpec(StrictModel):
    """One reward function and its weight in the sum."""

    name: str = Field(description="a registered reward (math_answer, format) or an import path package.module:function "
                      "of a function in TRL's convention f(prompts=, completions=, **columns) -> list[float | None]")
    weight: float = Field(1.0, description="weight in the weighted sum")

    _name = field_validator("name")(keyword_reward)


class Scheduled(StrictModel):
    """A coefficient that decays linearly with the step: λ_k = max(coef − (k − 1)·decay, floor), k from 1."""

    coef: float = Field(0.0, ge=0, description="λ_0, the value at step 1")
    decay: float = Field(0.0, ge=0, description="δ: how much λ falls per step")
    floor: float = Field(0.0, ge=0, description="λ never falls below this")

    def at(self, step: int) -> float:
        """λ at training step ``step`` (counted from 1)."""
        return max(self.coef - (step - 1) * self.decay, self.floor)


class RegularizerSpec(Scheduled):
    """A registered regularizer's weight (scheduled) and how its token matrix is aggregated."""

    agg_mode: AggMode | None = Field(None, description="None: the policy-gradient term's algorithm.agg_mode "
                                     "(AMPO's code: PG by seq-mean-token-sum-norm, entropy by token-mean)")


class SurrogateSpec(StrictModel):
    """The per-token surrogate used on one kind of token (policy samples, teacher text, hinted samples)."""

    name: str = Field("clip", description="a key of guidedrl.registry.SURROGATES: clip (PPO's clipped ratio), "
                      "plain (−A·ρ, LUFFY's remove-clip), shaped (−A·ρ/(ρ+γ), LUFFY/AMPO/Guide), logp (−A·log π, no "
                      "ratio), gspo (the sequence's ratio, clipped), cispo (clipped detached weight × log π), sapo (a "
                      "soft gate)")
    gamma: float = Field(0.1, gt=0, description="shaped: the constant γ")
    tau_pos: float = Field(1.0, gt=0, description="sapo: the gate's temperature where the advantage is positive")
    tau_neg: float = Field(1.05, gt=0, description="sapo: the gate's temperature elsewhere")
    gamma_quantile: float | None = Field(None, gt=0, lt=1, description="shaped: γ = this quantile of ρ over the "
                                         "mini-batch's tokens of this kind, detached, ≥ 1e-4 (Guide: 0.9)")

    _name = field_validator("name")(lambda v: SURROGATES.check(v))


class Surrogates(StrictModel):
    """Which surrogate each kind of token gets; a row's kind comes from the batch's flags."""

    policy: SurrogateSpec = Field(default_factory=SurrogateSpec, description="the student's own samples")
    teacher: SurrogateSpec = Field(default_factory=lambda: SurrogateSpec(name="shaped", gamma=0.1), description=(
        "teacher-written rows (behaviour log-prob 0, so ρ = π_θ as in LUFFY)"))
    hinted: SurrogateSpec = Field(default_factory=lambda: SurrogateSpec(name="shaped", gamma_quantile=0.9),
                                  description="rows sampled with a hint, trained without it (Guide)")


class RolloutCorrection(StrictModel):
    """Importance weights π_old / π_sampler on the student's own tokens, for a sampler whose log-probs differ
    from the training forward's (vLLM, bf16): truncated or masked, per token or per sequence, as TRL's
    ``vllm_importance_sampling_mode`` defines them; they multiply the policy-gradient token losses (not the
    regularizers), as verl's rollout importance sampling does."""

    level: Literal["token", "sequence"] = Field("token", description="a weight per token, or per row (exp of the "
                                                "row's summed log-ratio)")
    mode: Literal["truncate", "mask"] = Field("truncate", description="truncate: weights above the threshold "
                                              "become the threshold; mask: weights above it become 0")
    threshold: float = Field(2.0, gt=1, description="the largest weight kept")


class Refill(StrictModel):
    """DAPO's dynamic sampling: after the batch filters, draw fresh prompts until the step has as many informative
    groups as ``rollout.prompts_per_step`` (the extra ones dropped, last drawn first), as verl's
    ``filter_groups`` does; when the rounds run out the step trains on the groups it has (verl stops the run)."""

    max_generation_rounds: int = Field(3, ge=2, description="generation rounds per step at most, the first included")


class AlgorithmConfig(StrictModel):
    """The math of a step, each piece chosen by name from a registry of pure functions."""

    advantage: str = Field("grpo", description="a key of ADVANTAGES: grpo, dr_grpo, grpo_split, rkl, gae (PPO)")
    adv_eps: float = Field(1e-6, gt=0, description="added to the group std")
    advantage_addons: dict[str, Scheduled] = Field({}, description="added to the advantages, by name: reverse_kl "
                                                   "(w·(log π_T − log π_old)), label_bonus (TGPO-Adv: λ·π_old(ŷ_t))")
    surrogate: Surrogates = Field(default_factory=Surrogates, description="per-token surrogate by kind of token")
    eps_low: float = Field(0.2, ge=0, description="lower clip range of the ratio")
    eps_high: float = Field(0.2, ge=0, description="upper clip range (DAPO's clip-higher: larger than eps_low)")
    dual_clip: float | None = Field(None, gt=1, description="dual-clip constant c for negative advantages")
    agg_mode: AggMode = Field("token-mean", description="how the policy-gradient token losses become one number")
    norm_length: int | None = Field(None, ge=1, description="Dr.GRPO's constant (default: max_new_tokens)")
    regularizers: dict[str, RegularizerSpec] = Field({}, description="added to the loss, by name: entropy (bonus), "
                                                     "kl (k3 to the initial policy), kdrl, label_ce (TGPO), topk_kl")
    batch_filters: list[str] = Field([], description="applied after guidance, by name: flat_groups (DAPO: drop "
                                     "groups whose rewards are all equal; no update when none is left)")
    refill: Refill | None = Field(None, description="with batch_filters: sample fresh prompts until the step's "
                                  "groups are all informative, at most max_generation_rounds rounds (off: null)")
    rollout_correction: RolloutCorrection | None = Field(None, description=(
        "importance-weight the student's own tokens by π_old / π_sampler (off: null). π_old is the recomputed "
        "behaviour log-prob when rollout.recompute_behaviour_logp is on; with it off, the training forward's own "
        "detached log-prob when the step makes one update (no extra forward), else one no-grad forward before "
        "the update"))

    _advantage = field_validator("advantage")(lambda v: ADVANTAGES.check(v))
    _filters = field_validator("batch_filters")(lambda v: [BATCH_FILTERS.check(n) for n in v])

    @model_validator(mode="after")
    def _refill_filters(self) -> AlgorithmConfig:
        if self.refill is not None and not self.batch_filters:
            raise ValueError("refill: refills the groups a batch filter drops; set batch_filters (e.g. [flat_groups])")
        return self

    _addons = field_validator("advantage_addons")(lambda v: {ADVANTAGE_ADDONS.check(n): s for n, s in v.items()})
    _regularizers = field_validator("regularizers")(lambda v: {REGULARIZERS.check(n): s for n, s in v.items()})

    def active_regularizers(self) -> list[str]:
        """Regularizers with a coefficient that is ever non-zero."""
        return [n for n, s in self.regularizers.items() if max(s.coef, s.floor) > 0]

    def active_addons(self) -> list[str]:
        """Advantage add-ons with a coefficient that is ever non-zero."""
        return [n for n, s in self.advantage_addons.items() if max(s.coef, s.floor) > 0]


class OptimConfig(StrictModel):
    """Optimizer, schedule and how a rollout batch is split into updates."""

    lr: float = Field(2e-4, gt=0, description="peak learning rate (AdamW)")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    betas: tuple[Beta, Beta] = Field((0.9, 0.99), description="AdamW betas, each in [0, 1)")
    warmup_steps: int = Field(0, ge=0, description="linear warm-up steps")
    schedule: Literal["constant", "cosine", "linear"] = Field("constant", description="decay after warm-up")
    grad_clip: float = Field(1.0, gt=0, description="max global grad norm")
    epochs: int = Field(1, ge=1, description="K: passes over each rollout batch")
    mini_batches: int = Field(1, ge=1, description="optimizer steps per pass (AMPO: 2)")
    micro_batch_size: int = Field(64, ge=1, description="rows per forward/backward (gradient accumulation; a memory "
                                  "setting: the loss does not depend on it)")
    grad_norm_by_kind: bool = Field(False, description="diagnostic: log grad_norm/<kind>, the norm of the gradient "
                                    "of each kind of token's policy-gradient term (policy, teacher, hinted) before "
                                    "clipping; one extra backward per kind and micro-batch, one process only")


class EvalConfig(StrictModel):
    """Periodic held-out evaluation during training. A sample is correct when the verifier's answer check passes
    (the same definition for every method, whatever its training reward mixes in)."""

    every: int = Field(0, ge=0, description="evaluate every N steps (0 = only before and after training)")
    before: bool = Field(True, description="evaluate the untrained policy first (TRL's eval_on_start)")
    ks: list[int] = Field([1, 8], min_length=1, description="pass@k reported")
    samples: int = Field(8, ge=1, description="samples per problem (at least max(ks))")
    temperature: float = Field(1.0, ge=0, description="sampling temperature of evaluation (AMPO's authors: 0.6)")
    max_problems: int | None = Field(None, ge=1, description="evaluate on the first N problems of each split")
    holdout: float = Field(0.0, ge=0, lt=1, description="with your own data and no eval_datasets: this share of "
                           "the training rows (seeded) is held out as the 'holdout' set (0: no evaluation)")

    @model_validator(mode="after")
    def _enough_samples(self) -> EvalConfig:
        if any(k < 1 for k in self.ks):
            raise ValueError(f"ks: every k of pass@k must be >= 1, got {self.ks}")
        if self.samples < max(self.ks):
            raise ValueError(f"samples ({self.samples}) must be at least the largest k of ks ({max(self.ks)})")
        return self


class ServerSpec(StrictModel):
    """A model behind an OpenAI-compatible server (``vllm serve``, SGLang, a hosted API) and how it is asked."""

    base_url: str = Field(description="the API root, e.g. http://127.0.0.1:8000/v1")
    model: str = Field(description="the served model's name, as /v1/models lists it")
    api_key_env: str | None = Field(None, description="environment variable holding the API key (None: none)")
    timeout_s: float = Field(60.0, gt=0, description="seconds one request may take")
    retries: int = Field(3, ge=0, description="retries of a failed request, with exponential backoff")
    backoff_s: float = Field(1.0, ge=0, description="the first retry's wait; each next one waits twice as long")
    concurrency: int = Field(8, ge=1, description="requests in flight at once")


class TeacherSource(StrictModel):
    """One entry of the teacher pool: stored solutions (a dataset column) or a model asked on demand."""

    kind: str = Field("offline", description="a key of TEACHER_POOLS: offline (the teacher_solutions column), "
                      "online (a local HF causal LM), server (a served model, see ``server``)")
    server: ServerSpec | None = Field(None, description="server: the served teacher")
    teachers: list[str] | None = Field(None, description="offline: names to use from the column (None = all)")
    path: str | None = Field(None, description="online: path of a local HF causal LM")
    name: str | None = Field(None, description="online: the teacher's name in metrics (default: the path's name)")
    samples: int = Field(4, ge=1, description="online: solutions sampled per problem (cached per problem)")
    temperature: float = Field(1.0, gt=0, description="online: sampling temperature")
    max_new_tokens: int | None = Field(None, ge=1, description="online / server: the teacher's longest solution "
                                       "(None: the student's rollout.max_new_tokens)")

    _kind = field_validator("kind")(lambda v: TEACHER_POOLS.check(v))

    @model_validator(mode="after")
    def _online_needs_path(self) -> TeacherSource:
        if self.kind == "online" and not self.path:
            raise ValueError("an online teacher needs `path` (a local HF causal LM)")
        if self.kind == "server" and self.server is None:
            raise ValueError("a server teacher needs `server` (base_url and model)")
        return self


class GuidanceConfig(StrictModel):
    """What happens to a group the student fails: nothing (GRPO), teacher solutions (AMPO/LUFFY), hints (Guide).

    ``ladder`` lists strategies in the order they are tried; a later one acts only on groups the earlier
    ones left failing (e.g. ``[hint, teacher]``: re-roll with hints first, then insert teacher solutions).
    """

    ladder: list[str] = Field([], description="strategies in order, keys of GUIDANCE: teacher, hint ([] = none)")
    trigger: Literal["all_wrong", "adaptive_k", "always"] = Field(
        "all_wrong", description="all_wrong: no rollout correct (AMPO, Guide); adaptive_k: fewer than half "
        "correct, k = min(max_guidance, G/2 - #correct) (AMPO's newer code); always: every group (LUFFY)")
    num_guidance: int = Field(2, ge=1, description="k: teacher solutions inserted into a guided group")
    composition: Literal["replace", "add"] = Field(
        "replace", description="replace: the teacher rows replace k wrong rollouts (AMPO); add: they join the group "
        "whatever its rollouts scored, and with trigger always the engine samples group_size − k per prompt, so "
        "every group holds group_size rows (LUFFY: 7 samples + 1 trace)")
    per_teacher: int | None = Field(None, ge=1, description="at most this many of one teacher's solutions in a "
                                    "group (AMPO: 1; None: no limit)")
    max_guidance: int = Field(4, ge=1, description="adaptive_k: the largest k")
    selection: Literal["comprehension", "random", "first"] = Field(
        "comprehension", description="which verified candidates are inserted (random/first for ablations)")
    format_weight: float = Field(0.1, ge=0, le=1, description="selection rank = (1-w)·comprehension + w·format")
    teachers: list[TeacherSource] = Field(default_factory=lambda: [TeacherSource()], description="the teacher pool")
    hint_template: str = Field(DEFAULT_HINT_TEMPLATE, description="sampling context of a hinted re-roll "
                               "({prompt}, {hint})")
    hint_replace_group: bool = Field(True, description="hinted rows replace the failed group (False: mix in)")
    hint_steps_from_teacher: int = Field(1, ge=1, description="without a hint column: first N lines of a "
                                         "verified teacher solution are the hint")
    hint_writer: ServerSpec | None = Field(None, description="without a hint column: a served teacher writes the "
                                           "hint from hint_writer_template (before falling back to solutions)")
    hint_writer_template: str = Field("Problem: {prompt}\nGive a one-line hint for this problem that does not "
                                      "state the answer.\nHint:", description="prompt of the hint writer")
    hint_writer_max_tokens: int = Field(64, ge=1, description="longest hint the writer may write")

    _ladder = field_validator("ladder")(lambda v: [GUIDANCE.check(n) for n in v])

    @property
    def reserved_rows(self) -> int:
        """Rows of every group the guidance fills itself, so the engine samples ``group_size`` minus them: LUFFY's
        composition (teacher rows added to every group) reserves ``num_guidance``; every other setting none."""
        teacher_always = "teacher" in self.ladder and self.composition == "add" and self.trigger == "always"
        return self.num_guidance if teacher_always else 0
    _hint_template = field_validator("hint_template")(lambda v: template_fields(v, {"prompt", "hint"}))
    _writer_template = field_validator("hint_writer_template")(lambda v: template_fields(v, {"prompt"}))


class CriticConfig(StrictModel):
    """PPO's value model (built when ``algorithm.advantage`` is ``gae``): a copy of the policy's body with a
    scalar head, scoring the hint-free context; our choice for Guide-PPO, which the paper leaves open."""

    lr: float = Field(1e-4, gt=0, description="critic learning rate (AdamW, constant)")
    gamma: float = Field(1.0, ge=0, le=1, description="GAE discount γ")
    lam: float = Field(1.0, ge=0, le=1, description="GAE λ")
    value_clip: float | None = Field(0.5, gt=0, description="clip of the new value around the old one (None = off)")
    grad_clip: float = Field(1.0, gt=0, description="max grad norm of the critic")


class ScoringTeacher(StrictModel):
    """One teacher of ``teacher_signal.teachers``: a local model or a served one."""

    path: str | None = Field(None, description="a local HF causal LM, or a model name of the world")
    server: ServerSpec | None = Field(None, description="instead of path: a teacher behind a vLLM server")
    model_overrides: dict[str, Any] = Field({}, description="attributes set on the local teacher's config")

    @model_validator(mode="after")
    def _one_source(self) -> ScoringTeacher:
        if (self.path is None) == (self.server is None):
            raise ValueError("a teacher takes exactly one of path and server")
        return self


class TeacherSignalConfig(StrictModel):
    """TGPO and on-policy distillation: a frozen teacher scores the student's own rollouts every step.

    The teacher must share the student's tokenizer. Its log-probs of the sampled tokens feed the ``rkl``
    advantage, the ``reverse_kl`` add-on and the ``kdrl`` regularizer; its top-1 prediction on each student
    prefix is the label of TGPO's ``label_ce`` regularizer and of TGPO-Adv's ``label_bonus`` add-on. One teacher
    (``path`` or ``server``), several routed per row by a column (``teachers``, ``route_by``, ``routes``), or
    the student itself with the row's hint or solution in its prompt (``source: self_with_hint``).
    """

    path: str | None = Field(None, description="teacher: a local HF causal LM, or a model name of the world "
                             "(e.g. teacher_rewrite); None = no teacher signal")
    model_overrides: dict[str, Any] = Field({}, description="attributes set on the local teacher's config when it "
                                            "is loaded (as the top-level model_overrides for the policy)")
    server: ServerSpec | None = Field(None, description="instead of path: a teacher behind a vLLM server, asked "
                                      "for prompt_logprobs of each rollout (label argmax, temperature 1, no top-k)")
    label: Literal["argmax", "sample"] = Field("argmax", description="TGPO label: the teacher's top-1, or a "
                                               "sample from it (ablation; seeded per step)")
    temperature: float = Field(1.0, gt=0, description="temperature of the teacher's distribution")
    top_k: int = Field(8, ge=1, description="k of the topk_kl regularizer's teacher distribution")
    tokens: TeacherTokens = Field(
        "all", description="where the label terms apply: every response token (paper), tokens that differ from "
        "the teacher's label, or each row's entropy_share of highest / lowest-entropy tokens under π_old (ablations)")
    entropy_share: float = Field(0.2, gt=0, le=1, description="share of each row's tokens for the entropy sets")
    teachers: dict[str, ScoringTeacher] = Field({}, description="several teachers by name, each row scored by the "
                                                "one its route_by column names (instead of path / server)")
    route_by: str | None = Field(None, description="the data column whose value picks a row's teacher (e.g. "
                                 "data_source)")
    routes: dict[str, str] = Field({}, description="route_by value -> teacher name (a value not listed: "
                                   "default_teacher)")
    default_teacher: str | None = Field(None, description="teacher of rows whose value routes names none (None: "
                                        "such a row is an error at start)")
    source: Literal["model", "self_with_hint", "self_with_solution"] = Field(
        "model", description="model: path / server / teachers; self_with_hint / self_with_solution: the student "
        "itself with the row's hint (or reference solution: a 'solution' column, else its first teacher "
        "solution) in its prompt, scoring the hint-free rollout (on-policy self-distillation)")
    self_policy: Literal["initial", "current"] = Field("initial", description="self_*: the run's initial "
                                                       "policy (frozen) or the current one as the teacher")
    context_template: str = Field(DEFAULT_HINT_TEMPLATE, description="self_*: how the hint or solution enters the "
                                  "teacher's prompt ({prompt}, {hint}), as Guide inserts hints")

    @model_validator(mode="after")
    def _one_kind_of_teacher(self) -> TeacherSignalConfig:
        single = self.path is not None or self.server is not None
        if sum([single, bool(self.teachers), self.source != "model"]) > 1:
            raise ValueError("teacher_signal: give one of path / server, teachers, or a self_* source")
        unknown = sorted({*self.routes.values(), *([self.default_teacher] if self.default_teacher else [])}
                         - set(self.teachers))
        if unknown:
            raise ValueError(f"teacher_signal.routes / default_teacher name {unknown[0]!r}, not one of teachers "
                             f"({', '.join(self.teachers) or 'none'})")
        if len(self.teachers) > 1 and self.route_by is None:
            raise ValueError("teacher_signal.teachers: several teachers need route_by, the column that picks one")
        return self

    def scoring_teachers(self) -> dict[str, ScoringTeacher]:
        """The external teachers by name (a single path / server is the one teacher 'teacher')."""
        if self.path is not None or self.server is not None:
            return {"teacher": ScoringTeacher(path=self.path, server=self.server,
                                              model_overrides=self.model_overrides)}
        return dict(self.teachers)

    @property
    def configured(self) -> bool:
        """Whether any teacher is set."""
        return bool(self.scoring_teachers()) or self.source != "model"


class LoraSection(StrictModel):
    """Low-rank adapters on the policy (peft): only they are trained; the k3 KL's reference is the same model
    with the adapters switched off (no second copy); checkpoints hold the adapters, final/ the merged model."""

    r: int = Field(16, ge=1, description="adapter rank")
    alpha: int = Field(32, ge=1, description="adapter scaling alpha")
    dropout: float = Field(0.0, ge=0, lt=1, description="adapter dropout (0 for RL, like every dropout here)")
    target_modules: list[str] | str = Field("all-linear", description="peft target modules")


class MemoryConfig(StrictModel):
    """What one forward may hold, and the hardware a run is sized for: ``guidedrl train --dry-run`` estimates each
    process's memory from these and a run that cannot fit is refused at start (docs: Memory)."""

    tokens_per_forward: int | None = Field(16384, ge=1, description="padded prompt + response tokens per forward "
                                           "of any kind (training, recompute, reference, critic, teacher signal, "
                                           "comprehension scoring, Guide's γ); optim.micro_batch_size stays an "
                                           "upper bound on rows (None: rows alone)")
    logits_chunk: int | None = Field(1024, ge=1, description="response positions whose vocabulary-wide logits "
                                     "exist at once (None: a whole forward's, B×R×V)")
    gpu_memory_gib: float | None = Field(None, gt=0, description="memory of one accelerator the run must fit "
                                         "(None: the device's own when it is a GPU; no check on a CPU)")
    processes: int = Field(1, ge=1, description="data-parallel processes the estimate assumes (a launched run "
                           "uses its real number)")
    sharding: Literal["none", "optimizer", "full"] = Field(
        "none", description="what the estimate spreads over processes: optimizer (gradients and optimizer state, "
        "ZeRO-2 / FSDP SHARD_GRAD_OP), full (weights too, ZeRO-3 / FSDP FULL_SHARD)")


class TrainConfig(StrictModel):
    """A training run. Without ``model``/``dataset`` it trains the embedded world's student on its train split."""

    plugins: list[str] = Field([], description="imported before anything else is validated, so the pieces they "
                               "register can be named below: modules (package.module) or .py files (relative "
                               "to the config file)")

    world: str = Field("worlds/default", description="embedded world supplying defaults for model and data")
    model: str | None = Field(None, description="path of any HF causal LM (default: the world's student)")
    model_overrides: dict[str, Any] = Field({}, description="attributes set on the policy's config when it is loaded "
                                         "(policy, reference, critic, vLLM), e.g. {rope_theta: 40000, "
                                         "max_position_embeddings: 16384} to extend Qwen2.5-Math's context as "
                                         "LUFFY's authors did, or a rope_scaling; the context check reads them")
    dataset: str | None = Field(None, description="training data: JSONL / JSON / parquet / save_to_disk dir")
    dataset_split: str | None = Field(None, description="split of a save_to_disk DatasetDict")
    eval_datasets: dict[str, str] | None = Field(None, description="name -> path (default: the world's test_id and "
                                                 "test_ood when the data is the world's; else eval.holdout)")
    output_dir: str = Field("runs/grpo", description="metrics, checkpoints and the final model go here")
    seed: int = Field(0, ge=0, le=SEED_MAX, description="seeds data order, sampling and initialisation")
    steps: int = Field(100, ge=1, description="training steps")
    device: str = Field("auto", description="auto (CUDA when present, else CPU), cpu, cuda or cuda:N; every model "
                        "of the run is placed there")
    precision: Literal["fp32", "bf16", "bf16-pure"] = Field(
        "fp32", description="bf16: bf16 autocast with fp32 master weights and optimizer state; bf16-pure: weights "
        "stored in bf16 (half the memory, small updates lost); frozen models (teacher, reference) run in bf16 "
        "whenever the run is not fp32")
    disable_dropout: bool = Field(True, description="set every dropout to 0 (as TRL): the policy that samples is "
                                  "the one trained")
    gradient_checkpointing: bool = Field(False, description="recompute activations in the backward (memory for time)")
    lora: LoraSection | None = Field(None, description="train low-rank adapters instead of every weight "
                                     "(pip install guidedrl[lora])")
    rewards: list[RewardSpec] = Field(default_factory=lambda: [RewardSpec(name="math_answer")], min_length=1,
                                      description="weighted sum of rewards (at least one)")
    correct_threshold: float = Field(0.6, description="a rollout counts as correct when its reward exceeds this")
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    guidance: GuidanceConfig = Field(default_factory=GuidanceConfig)
    teacher_signal: TeacherSignalConfig = Field(default_factory=TeacherSignalConfig)
    critic: CriticConfig = Field(default_factory=CriticConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    log_every: int = Field(1, ge=1, description="write metrics every N steps")
    report_to: list[Literal["tensorboard", "wandb"]] = Field(["tensorboard"], description=(
        "where metrics go besides metrics.jsonl: TensorBoard (OUT/tensorboard), Weights & Biases (OUT/wandb; "
        "WANDB_MODE=offline works without a network; pip install guidedrl[wandb])"))
    save_every: int = Field(50, ge=0, description="checkpoint every N steps (0 = only at the end)")
    keep_checkpoints: int = Field(2, ge=1, description="checkpoints kept on disk")
    max_nonfinite_steps: int = Field(3, ge=1, description="stop after this many steps in a row whose every update "
                                     "had a non-finite loss or gradient (each such update is skipped and counted)")

    @field_validator("plugins")
    @classmethod
    def _import_plugins(cls, plugins: list[str], info: ValidationInfo) -> list[str]:
        base = (info.context or {}).get("config_dir")
        for plugin in plugins:
            try:
                load_plugin(plugin, Path(base) if base else None)
            except (ImportError, FileNotFoundError) as err:
                raise ValueError(f"cannot import plugin {plugin!r}: {err}") from None
            except Exception as err:  # noqa: BLE001 - the user's module failed while importing: say what it raised
                raise ValueError(f"cannot import plugin {plugin!r}: it raised {raised(err)}") from None
        return plugins

    _device = field_validator("device")(device_spec)

    def needs(self) -> frozenset[str]:
        """The per-token fields the configured pieces read (teacher_logp, ref_logp, values, entropy, ...)."""
        a = self.algorithm
        return (ADVANTAGES.needs([a.advantage]) | ADVANTAGE_ADDONS.needs(a.active_addons())
                | REGULARIZERS.needs(a.active_regularizers()))

    @model_validator(mode="after")
    def _pieces_fit(self) -> TrainConfig:
        a, t = self.algorithm, self.teacher_signal
        served = any(teacher.server is not None for teacher in t.scoring_teachers().values())
        if served and (t.label != "argmax" or t.temperature != 1.0 or "teacher_topk" in self.needs()):
            raise ValueError("teacher_signal: a served teacher gives its log-prob and top-1 token at temperature 1: "
                             "it excludes label=sample, temperature != 1 and topk_kl")
        if self.needs() & TEACHER_FIELDS and not t.configured:
            users = [f"algorithm.advantage={a.advantage}"] if ADVANTAGES.needs([a.advantage]) & TEACHER_FIELDS else []
            users += [f"algorithm.advantage_addons.{n}" for n in a.active_addons()
                      if ADVANTAGE_ADDONS.needs([n]) & TEACHER_FIELDS]
            users += [f"algorithm.regularizers.{n}" for n in a.active_regularizers()
                      if REGULARIZERS.needs([n]) & TEACHER_FIELDS]
            raise ValueError(f"teacher_signal.path (or .server, .teachers, a self_* source) is required by "
                             f"{', '.join(users)}")
        g, o = self.guidance, self.optim
        if g.num_guidance > self.rollout.group_size:
            raise ValueError(f"guidance.num_guidance ({g.num_guidance}) is more than rollout.group_size "
                             f"({self.rollout.group_size})")
        if o.mini_batches > self.rollout.prompts_per_step:  # a mini-batch holds whole groups
            raise ValueError(f"optim.mini_batches ({o.mini_batches}) is more than the groups of a step "
                             f"(rollout.prompts_per_step {self.rollout.prompts_per_step})")
        if g.reserved_rows and self.rollout.group_size - g.reserved_rows < 2:
            raise ValueError(f"guidance.composition=add with trigger=always samples rollout.group_size − num_guidance "
                             f"= {self.rollout.group_size - g.reserved_rows} rollouts per prompt; "
                             "at least 2 are needed")
        if a.batch_filters and a.advantage == "rkl":
            raise ValueError("algorithm.batch_filters drop groups by their verifier rewards, which advantage rkl "
                             "does not use")
        return self


def resume_changes(recorded: TrainConfig, new: TrainConfig) -> list[str]:
    """Dotted keys whose values differ between a run's recorded config and the one it is resumed with, outside
    the keys that may change on resume."""
    def flat(data: dict, prefix: str = "") -> dict[str, object]:
        out: dict[str, object] = {}
        for key, value in data.items():
            name = f"{prefix}{key}"
            out.update(flat(value, f"{name}.") if isinstance(value, dict) and value else {name: value})
        return out

    old, now = flat(recorded.model_dump(mode="json")), flat(new.model_dump(mode="json"))
    free = lambda key: any(key == k or key.startswith(f"{k}.") for k in MAY_CHANGE_ON_RESUME)  # noqa: E731
    return [f"{k} ({old.get(k)!r} -> {now.get(k)!r})" for k in sorted(set(old) | set(now))
            if old.get(k) != now.get(k) and not free(k)]
