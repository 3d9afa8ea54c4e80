"""Every configuration section as a pydantic model: the one place where defaults live.

YAML files are validated against these models by :func:`guidedrl.yaml_config.load_config`; an
unknown key or a wrong type is an error that names the key.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from guidedrl.yaml_config import StrictModel


class WorldConfig(StrictModel):
    """The embedded arithmetic world: problems, splits, and the tiny student and teachers trained on them."""

    seed: int = Field(0, description="seed of the problem generator and of every model's training")
    model_size: Literal["micro", "tiny"] = Field("tiny", description="zoo size of student and teachers")
    id_operands: list[int] = Field([2, 3, 4], description="operand counts of training and test_id problems")
    ood_operands: list[int] = Field([5], description="operand counts of test_ood problems (longer than training)")
    operand_max: int = Field(9, ge=1, description="operands are drawn from 1..operand_max")
    operators: str = Field("+-*", description="operators problems may use")
    max_value: int = Field(99, ge=1, description="every intermediate value stays in [0, max_value]")
    n_train: int = Field(2000, ge=1, description="problems in the RL training split")
    n_test_id: int = Field(200, ge=1, description="held-out in-distribution problems")
    n_test_ood: int = Field(200, ge=1, description="held-out out-of-distribution problems")
    n_sft: int = Field(40000, ge=1, description="problems in the supervised corpus of student and teachers")
    teacher_styles: list[str] = Field(["steps", "rewrite", "words", "running"],
                                      description="one teacher model per solution style")
    student_style: str = Field("steps", description="style of the student's supervised data")
    teacher_steps: int = Field(700, ge=1, description="SFT steps per teacher (until strong)")
    teacher_steps_by_style: dict[str, int] = Field({"rewrite": 1400, "running": 1400}, description=(
        "SFT steps of the teachers of these styles (the ones with longer solutions learn more slowly)"))
    student_steps: int = Field(500, ge=1, description="SFT steps of the student (weak but not hopeless)")
    student_hint_share: float = Field(0.25, ge=0, le=1,
                                      description="share of the student's SFT prompts that carry the hint")
    student_operands: list[int] | None = Field([2, 3], description=(
        "operand counts of the student's hint-free SFT examples (None = all): longer ID problems it practised "
        "only with a hint, so alone it fails them (the all-wrong groups guidance is for) and a hint helps"))
    student_slip_share: float = Field(0.3, ge=0, le=1, description=(
        "share of the student's SFT solutions whose final box miscopies the result (a habit RL can fix)"))
    batch_size: int = Field(64, ge=1, description="SFT batch size")
    lr: float = Field(3e-3, gt=0, description="SFT peak learning rate (warm-up then cosine)")
    pool_samples: int = Field(2, ge=0, description="solutions sampled per training problem per teacher")
    pool_temperature: float = Field(1.0, ge=0, description="sampling temperature of the teacher pool")
    max_new_tokens: int = Field(128, ge=1, description="generation limit for pool and evaluation")
    eval_samples: int = Field(8, ge=1, description="samples per problem in the build's evaluation")
    eval_temperature: float = Field(1.0, ge=0, description="sampling temperature of the build's evaluation")

    @model_validator(mode="after")
    def _known_styles(self) -> WorldConfig:
        from guidedrl.world.styles import STYLES
        for style in [*self.teacher_styles, self.student_style]:
            if style not in STYLES:
                raise ValueError(f"unknown style {style!r}; known: {sorted(STYLES)}")
        return self


WORLD_PRESETS: dict[str, dict] = {
    "default": {},
    "micro": {"model_size": "micro", "id_operands": [2, 3], "ood_operands": [4], "n_train": 512, "n_test_id": 48,
              "n_test_ood": 48, "n_sft": 8000, "teacher_styles": ["steps", "rewrite"], "teacher_steps": 600,
              "student_steps": 450, "student_operands": None, "teacher_steps_by_style": {}, "student_slip_share": 0.5, "lr": 1e-2,
              "pool_samples": 2, "max_new_tokens": 48,
              "eval_samples": 4},
}


def world_preset(size: str, **overrides: object) -> WorldConfig:
    """A world configuration by preset name, with field overrides."""
    if size not in WORLD_PRESETS:
        raise ValueError(f"unknown world size {size!r}; known: {sorted(WORLD_PRESETS)}")
    return WorldConfig(**{**WORLD_PRESETS[size], **overrides})


class RolloutConfig(StrictModel):
    """How responses are sampled: G per prompt, from the current policy."""

    backend: Literal["hf"] = Field("hf", description="rollout engine (transformers with a KV cache)")
    prompts_per_step: int = Field(8, ge=1, description="prompts sampled per training step")
    group_size: int = Field(8, ge=2, description="G: responses per prompt (a group of 1 has no baseline)")
    temperature: float = Field(1.0, gt=0, description="sampling temperature, also used by the training forward")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling; behaviour log-probs are untruncated")
    max_new_tokens: int = Field(64, ge=1, description="response length limit")


class RewardSpec(StrictModel):
    """One registered reward function and its weight in the sum."""

    name: str = Field(description="a key of guidedrl.rewards.REWARDS")
    weight: float = Field(1.0, description="weight in the weighted sum")


class AlgorithmConfig(StrictModel):
    """The math of a step, each piece chosen by name from a registry of pure functions."""

    advantage: str = Field("grpo", description="a key of ADVANTAGES: grpo, dr_grpo, grpo_split, rkl, gae (PPO)")
    loss: str = Field("vanilla", description="a key of POLICY_LOSSES: vanilla, mixed")
    adv_eps: float = Field(1e-6, gt=0, description="added to the group std")
    eps_low: float = Field(0.2, ge=0, description="lower clip range of the ratio")
    eps_high: float = Field(0.2, ge=0, description="upper clip range (DAPO's clip-higher: larger than eps_low)")
    dual_clip: float | None = Field(None, gt=1, description="dual-clip constant c for negative advantages")
    agg_mode: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"] = Field(
        "token-mean", description="how token losses become one number")
    norm_length: int | None = Field(None, ge=1, description="Dr.GRPO's constant (default: max_new_tokens)")
    filter_groups: bool = Field(False, description="DAPO's dynamic-sampling filter: drop groups whose rewards are "
                                "all equal from the update (no refill; no update when every group is flat)")
    entropy_coef: float = Field(0.0, ge=0, description="entropy bonus coefficient")
    kl_coef: float = Field(0.0, ge=0, description="β of the k3 KL to the frozen initial policy (0 = no reference)")
    on_policy_clip: bool = Field(True, description="False = LUFFY's unclipped on-policy term")
    off_policy_gamma: float = Field(0.1, gt=0, description="γ of the shaping f(p)=p/(p+γ) on teacher tokens")
    hint_shaping: Literal["percentile", "constant", "clip"] = Field(
        "percentile", description="how hinted rows' corrected ratio is treated (Guide)")
    hint_gamma: float = Field(0.1, gt=0, description="γ when hint_shaping is constant")
    hint_percentile: float = Field(0.9, gt=0, lt=1, description="quantile of the ratio used as γ (Guide)")


class OptimConfig(StrictModel):
    """Optimizer, schedule and how a rollout batch is split into updates."""

    lr: float = Field(2e-4, gt=0, description="peak learning rate (AdamW)")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    betas: tuple[float, float] = Field((0.9, 0.99), description="AdamW betas")
    warmup_steps: int = Field(0, ge=0, description="linear warm-up steps")
    schedule: Literal["constant", "cosine", "linear"] = Field("constant", description="decay after warm-up")
    grad_clip: float = Field(1.0, gt=0, description="max global grad norm")
    epochs: int = Field(1, ge=1, description="K: passes over each rollout batch")
    mini_batches: int = Field(1, ge=1, description="optimizer steps per pass (AMPO: 2)")
    micro_batch_size: int = Field(64, ge=1, description="rows per forward/backward (gradient accumulation)")


class EvalConfig(StrictModel):
    """Periodic held-out evaluation during training."""

    every: int = Field(0, ge=0, description="evaluate every N steps (0 = only before and after training)")
    ks: list[int] = Field([1, 8], description="pass@k reported")
    samples: int = Field(8, ge=1, description="samples per problem")
    temperature: float = Field(1.0, ge=0, description="sampling temperature of evaluation")
    max_problems: int | None = Field(None, ge=1, description="evaluate on the first N problems of each split")


class TeacherSource(StrictModel):
    """One entry of the teacher pool: stored solutions (a dataset column) or a model asked on demand."""

    kind: Literal["offline", "online"] = Field("offline", description="offline: the teacher_solutions column")
    teachers: list[str] | None = Field(None, description="offline: names to use from the column (None = all)")
    path: str | None = Field(None, description="online: path of a local HF causal LM")
    name: str | None = Field(None, description="online: the teacher's name in metrics (default: the path's name)")
    samples: int = Field(4, ge=1, description="online: solutions sampled per problem (cached per problem)")
    temperature: float = Field(1.0, gt=0, description="online: sampling temperature")

    @model_validator(mode="after")
    def _online_needs_path(self) -> TeacherSource:
        if self.kind == "online" and not self.path:
            raise ValueError("an online teacher needs `path` (a local HF causal LM)")
        return self


class GuidanceConfig(StrictModel):
    """What happens to a group the student fails: nothing (GRPO), teacher solutions (AMPO/LUFFY), hints (Guide).

    ``ladder`` lists strategies in the order they are tried; a later one acts only on groups the earlier
    ones left failing (e.g. ``[hint, teacher]``: re-roll with hints first, then insert teacher solutions).
    """

    ladder: list[Literal["teacher", "hint"]] = Field([], description="strategies in order ([] = none)")
    trigger: Literal["all_wrong", "adaptive_k", "always"] = Field(
        "all_wrong", description="all_wrong: no rollout correct (AMPO, Guide); adaptive_k: fewer than half "
        "correct, k = min(max_guidance, G/2 - #correct) (AMPO's newer code); always: every group (LUFFY)")
    num_guidance: int = Field(2, ge=1, description="k: teacher solutions inserted into a guided group")
    max_guidance: int = Field(4, ge=1, description="adaptive_k: the largest k")
    selection: Literal["comprehension", "random", "first"] = Field(
        "comprehension", description="which verified candidates are inserted (random/first for ablations)")
    format_weight: float = Field(0.1, ge=0, le=1, description="selection rank = (1-w)·comprehension + w·format")
    teachers: list[TeacherSource] = Field([TeacherSource()], description="the teacher pool")
    hint_template: str = Field("{prompt}hint: {hint}\n", description="sampling context of a hinted re-roll")
    hint_replace_group: bool = Field(True, description="hinted rows replace the failed group (False: mix in)")
    hint_steps_from_teacher: int = Field(1, ge=1, description="without a hint column: first N lines of a "
                                         "verified teacher solution are the hint")


class CriticConfig(StrictModel):
    """PPO's value model (used when ``algorithm.advantage`` is ``gae``): a copy of the policy's body with a
    scalar head, scoring the hint-free context; our choice for Guide-PPO, which the paper leaves open."""

    lr: float = Field(1e-4, gt=0, description="critic learning rate (AdamW, constant)")
    gamma: float = Field(1.0, ge=0, le=1, description="GAE discount γ")
    lam: float = Field(1.0, ge=0, le=1, description="GAE λ")
    value_clip: float | None = Field(0.5, gt=0, description="clip of the new value around the old one (None = off)")
    grad_clip: float = Field(1.0, gt=0, description="max grad norm of the critic")


class TeacherSignalConfig(StrictModel):
    """TGPO and on-policy distillation: a frozen teacher scores the student's own rollouts every step.

    The teacher must share the student's tokenizer. Its log-probs of the sampled tokens feed the ``rkl``
    advantage, ``rkl_weight`` and KDRL's k2 term; its top-1 prediction on each student prefix is the label
    of TGPO's term, weighted by λ_k = max(ce_coef − (k−1)·ce_decay, ce_floor) at step k: a cross-entropy
    (``form: reg``, the paper's final TGPO) or a bonus on the advantages (``form: adv``, TGPO-Adv).
    """

    path: str | None = Field(None, description="teacher: a local HF causal LM, or a model name of the world "
                             "(e.g. teacher_rewrite); None = no teacher signal")
    label: Literal["argmax", "sample"] = Field("argmax", description="TGPO label: the teacher's top-1, or a "
                                               "sample from it (ablation)")
    temperature: float = Field(1.0, gt=0, description="temperature of the teacher's distribution")
    ce_coef: float = Field(0.0, ge=0, description="λ_0 of TGPO's teacher term (authors: 0.002 reg, 0.02 adv)")
    ce_decay: float = Field(0.0, ge=0, description="δ: λ falls by this much per step (authors: 1e-5 reg, 1e-4 adv)")
    ce_floor: float = Field(0.0, ge=0, description="λ never falls below this")
    form: Literal["reg", "adv"] = Field("reg", description="reg: loss + λ_k·CE(teacher label); adv (TGPO-Adv): "
                                        "λ_k·π_old(label) added to the advantage of the sampled token")
    target: Literal["label", "topk"] = Field("label", description="what form reg fits: the label (CE), or the "
                                             "teacher's top-k distribution renormalized (forward KL, ablation)")
    top_k: int = Field(8, ge=1, description="k of target topk")
    tokens: Literal["all", "disagree", "high_entropy", "low_entropy"] = Field(
        "all", description="where the teacher term applies: every response token (paper), tokens that differ "
        "from the teacher's label, or each row's entropy_share of highest / lowest-entropy tokens (ablations)")
    entropy_share: float = Field(0.2, gt=0, le=1, description="share of each row's tokens for the entropy sets")
    kdrl_coef: float = Field(0.0, ge=0, description="β of KDRL's ½(log π_T − log π_θ)² term (authors: 0.002)")
    rkl_weight: float = Field(0.0, ge=0, description="adds w·(log π_T − log π_old) per token to the RLVR "
                              "advantage (reverse-KL distillation combined with RLVR)")


class TrainConfig(StrictModel):
    """A training run. Without ``model``/``dataset`` it trains the embedded world's student on its train split."""

    world: str = Field("worlds/default", description="embedded world supplying defaults for model and data")
    model: str | None = Field(None, description="path of any HF causal LM (default: the world's student)")
    dataset: str | None = Field(None, description="training data: JSONL / JSON / parquet / save_to_disk dir")
    dataset_split: str | None = Field(None, description="split of a save_to_disk DatasetDict")
    eval_datasets: dict[str, str] | None = Field(None, description="name -> path (default: world test_id, test_ood)")
    output_dir: str = Field("runs/grpo", description="metrics, checkpoints and the final model go here")
    seed: int = Field(0, description="seeds data order, sampling and initialisation")
    steps: int = Field(100, ge=1, description="training steps")
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="policy parameter dtype")
    rewards: list[RewardSpec] = Field([RewardSpec(name="math_answer")], description="weighted sum of rewards")
    correct_threshold: float = Field(0.6, description="a rollout counts as correct when its reward exceeds this")
    rollout: RolloutConfig = RolloutConfig()
    algorithm: AlgorithmConfig = AlgorithmConfig()
    guidance: GuidanceConfig = GuidanceConfig()
    teacher_signal: TeacherSignalConfig = TeacherSignalConfig()
    critic: CriticConfig = CriticConfig()
    optim: OptimConfig = OptimConfig()
    eval: EvalConfig = EvalConfig()
    log_every: int = Field(1, ge=1, description="write metrics every N steps")
    save_every: int = Field(50, ge=0, description="checkpoint every N steps (0 = only at the end)")
    keep_checkpoints: int = Field(2, ge=1, description="checkpoints kept on disk")

    @model_validator(mode="after")
    def _pieces_fit(self) -> TrainConfig:
        t, a = self.teacher_signal, self.algorithm
        needs_teacher = [name for name, on in (("algorithm.advantage=rkl", a.advantage == "rkl"),
                                               ("teacher_signal.ce_coef", max(t.ce_coef, t.ce_floor) > 0),
                                               ("teacher_signal.kdrl_coef", t.kdrl_coef > 0),
                                               ("teacher_signal.rkl_weight", t.rkl_weight > 0)) if on]
        if needs_teacher and t.path is None:
            raise ValueError(f"teacher_signal.path is required by {', '.join(needs_teacher)}")
        if a.filter_groups and a.advantage == "rkl":
            raise ValueError("algorithm.filter_groups drops groups by their verifier rewards, which advantage rkl "
                             "does not use")
        if t.form == "adv" and t.target == "topk":
            raise ValueError("teacher_signal.target=topk needs form=reg (TGPO-Adv uses the label)")
        one_update = (self.optim.epochs, self.optim.mini_batches) == (1, 1)
        if t.form == "adv" and max(t.ce_coef, t.ce_floor) > 0 and not one_update:
            raise ValueError("teacher_signal.form=adv needs optim.epochs=1 and optim.mini_batches=1: its bonus "
                             "π_old(label) is read from the policy before its one update")
        if self.guidance.ladder and a.loss == "vanilla":
            raise ValueError("guidance inserts teacher or hinted rows: set algorithm.loss to mixed")
        return self

