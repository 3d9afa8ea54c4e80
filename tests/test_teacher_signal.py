"""TGPO / reverse-KL distillation: the teacher's view of the student's rollouts, the losses, the wiring."""

from __future__ import annotations

import math
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from rich.console import Console
from tokenizers import Tokenizer, models
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from guidedrl.algorithms.advantages import ADVANTAGES, AdvantageInputs, plus_reverse_kl
from guidedrl.algorithms.losses import (POLICY_LOSSES, LossInputs, LossSettings, plus_label_bonus, teacher_token_mask,
                                        topk_forward_kl)
from guidedrl.batch import RolloutBatch
from guidedrl.config import TrainConfig
from guidedrl.data import encode_prompts
from guidedrl.rollout.engine import SamplingParams
from guidedrl.rollout.hf_engine import HFEngine
from guidedrl.teachers.scorer import TeacherScorer, TokenizerMismatchError
from guidedrl.trainer.loop import Trainer
from guidedrl.yaml_config import ConfigError, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_teacher_logprobs_on_student_prefixes_equal_a_direct_forward(micro_world: Path) -> None:
    tok = AutoTokenizer.from_pretrained(micro_world / "models" / "student")
    student = AutoModelForCausalLM.from_pretrained(micro_world / "models" / "student").eval()
    prompts = encode_prompts(tok, ["3+4*2\n", "9-2\n", "5*5-7+1\n"])
    rollouts = HFEngine(student, tok.pad_token_id, tok.eos_token_id).generate(
        prompts, 2, SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=24, seed=3))
    scorer = TeacherScorer(str(micro_world / "models" / "teacher_rewrite"), tok, top_k=3)
    signal = scorer.score(rollouts)
    teacher = AutoModelForCausalLM.from_pretrained(micro_world / "models" / "teacher_rewrite").eval()
    for row in range(rollouts.size):  # one unpadded sequence at a time, no shared batching
        p = [t for t, m in zip(rollouts.prompt_ids[row].tolist(), rollouts.prompt_mask[row].tolist()) if m]
        n = int(rollouts.response_mask[row].sum())
        r = rollouts.response_ids[row, :n].tolist()
        with torch.no_grad():
            logits = teacher(torch.tensor([p + r])).logits[0, len(p) - 1:len(p) - 1 + n]
        direct = torch.log_softmax(logits.float(), -1)
        expected = direct.gather(-1, torch.tensor(r)[:, None]).squeeze(-1)
        torch.testing.assert_close(signal.logp[row, :n], expected, atol=1e-4, rtol=1e-4)
        assert signal.label[row, :n].tolist() == direct.argmax(-1).tolist()
        top = direct.topk(3, dim=-1)
        assert signal.topk_ids[row, :n].tolist() == top.indices.tolist()
        torch.testing.assert_close(signal.topk_logp[row, :n], top.values, atol=1e-4, rtol=1e-4)
        assert signal.logp[row, n:].abs().sum() == 0


def test_mismatched_tokenizers_are_refused(micro_world: Path, tmp_path: Path) -> None:
    other = tmp_path / "other_teacher"
    shutil.copytree(micro_world / "models" / "teacher_rewrite", other)
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "x": 4, "+": 5}  # ids mean other tokens
    PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<unk>")),
                            pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>").save_pretrained(other)
    student_tok = AutoTokenizer.from_pretrained(micro_world / "models" / "student")
    with pytest.raises(TokenizerMismatchError, match="does not match the student's"):
        TeacherScorer(str(other), student_tok)
    cfg = TrainConfig(world=str(micro_world), output_dir=str(tmp_path / "run"),
                      teacher_signal={"path": str(other), "ce_coef": 0.1})
    with pytest.raises(ConfigError, match="teacher_signal.path"):
        Trainer(cfg, console=Console(quiet=True))


def test_reverse_kl_advantage_and_tgpo_loss_on_a_tiny_vocabulary() -> None:
    # vocabulary of 3 tokens; one row of 2 response tokens, sampled tokens [0, 2]
    student_logits = torch.tensor([[[2.0, 1.0, 0.0], [0.0, 0.0, 1.0]]], requires_grad=True)
    teacher_logits = torch.tensor([[[0.0, 3.0, 0.0], [1.0, 0.0, 1.0]]])
    tokens = torch.tensor([[0, 2]])
    logp_all = torch.log_softmax(student_logits, -1)
    t_all = torch.log_softmax(teacher_logits, -1)
    logp = logp_all.gather(-1, tokens[..., None]).squeeze(-1)
    teacher_logp = t_all.gather(-1, tokens[..., None]).squeeze(-1)
    mask = torch.ones(1, 2)
    behaviour = logp.detach()

    # reverse KL advantage: log π_T(o_t) − log π_old(o_t), by hand
    ls = lambda row: [math.log(math.exp(v) / sum(math.exp(u) for u in row)) for v in row]  # noqa: E731
    expected_adv = [ls([0.0, 3.0, 0.0])[0] - ls([2.0, 1.0, 0.0])[0], ls([1.0, 0.0, 1.0])[2] - ls([0.0, 0.0, 1.0])[2]]
    x = AdvantageInputs(rewards=torch.tensor([1.0]), response_mask=mask, group_index=torch.tensor([0]),
                        behaviour_logp=behaviour, teacher_logp=teacher_logp)
    torch.testing.assert_close(ADVANTAGES["rkl"](x)[0], torch.tensor(expected_adv))
    # combined with RLVR: A + w·(log π_T − log π_old)
    torch.testing.assert_close(plus_reverse_kl(torch.full((1, 2), 0.5), x, 0.1)[0],
                               0.5 + 0.1 * torch.tensor(expected_adv))

    # TGPO: GRPO surrogate (ratio 1 at the behaviour policy) + λ·mean_t −log π_θ(argmax π_T)
    label = t_all.argmax(-1)  # [1, 0] (tie at t=1 resolves to the first)
    label_logp = logp_all.gather(-1, label[..., None]).squeeze(-1)
    adv = torch.tensor([[0.7, 0.7]])
    lam = 0.05
    loss, stats = POLICY_LOSSES["vanilla"](LossInputs(logp=logp, behaviour_logp=behaviour, advantages=adv,
                                                      response_mask=mask, label_logp=label_logp),
                                           LossSettings(label_ce_coef=lam))
    ce = -(ls([2.0, 1.0, 0.0])[1] + ls([0.0, 0.0, 1.0])[0]) / 2
    assert loss.item() == pytest.approx(-0.7 + lam * ce, abs=1e-6)
    assert stats["label_ce"] == pytest.approx(ce, abs=1e-6)
    loss.backward()
    # d loss / d logit of token 1 at position 0, token-mean over 2 tokens: the PG term −0.7·ρ(token 0) gives
    # +0.7·p1, the CE on label 1 gives λ·(p1 − 1)
    p1 = math.exp(ls([2.0, 1.0, 0.0])[1])
    assert student_logits.grad[0, 0, 1].item() == pytest.approx(0.5 * (0.7 * p1 + lam * (p1 - 1)), abs=1e-6)


def test_tgpo_adv_bonus_and_topk_forward_kl_on_a_tiny_vocabulary() -> None:
    # vocabulary of 3 tokens; one row of 2 response tokens, sampled tokens [0, 2], behaviour = current policy
    student_logits = torch.tensor([[[2.0, 1.0, 0.0], [0.0, 0.0, 1.0]]], requires_grad=True)
    logp_all = torch.log_softmax(student_logits, -1)
    logp = logp_all.gather(-1, torch.tensor([[[0], [2]]])).squeeze(-1)
    mask, adv = torch.ones(1, 2), torch.tensor([[0.5, 0.5]])
    p = [[math.exp(v) for v in row] for row in logp_all[0].tolist()]

    # TGPO-Adv: labels [1, 0]; A_t = 0.5 + λ·π_old(ŷ_t); at ratio 1 the loss is −mean_t A_t
    label_logp = logp_all.gather(-1, torch.tensor([[[1], [0]]])).squeeze(-1)
    bonus = plus_label_bonus(adv, label_logp, 0.2, mask)
    torch.testing.assert_close(bonus, torch.tensor([[0.5 + 0.2 * p[0][1], 0.5 + 0.2 * p[1][0]]]))
    loss, _ = POLICY_LOSSES["vanilla"](LossInputs(logp=logp, behaviour_logp=logp.detach(), advantages=adv,
                                                  response_mask=mask, label_logp=label_logp),
                                       LossSettings(label_bonus_coef=0.2))
    assert loss.item() == pytest.approx(-(1.0 + 0.2 * (p[0][1] + p[1][0])) / 2, abs=1e-6)
    loss.backward()  # the bonus is a constant: only the sampled tokens' log-probs carry the gradient
    assert student_logits.grad[0, 0, 0].item() == pytest.approx(-(0.5 + 0.2 * p[0][1]) * (1 - p[0][0]) / 2, abs=1e-6)

    # top-k forward KL: the teacher's 2 best tokens at each position, renormalized over those 2
    teacher_topk_logp = torch.log(torch.tensor([[[0.6, 0.2], [0.5, 0.1]]]))
    topk_ids = torch.tensor([[[1, 0], [2, 1]]])
    student_topk = logp_all.gather(-1, topk_ids)
    kl = topk_forward_kl(student_topk, teacher_topk_logp)
    q = [[0.75, 0.25], [5 / 6, 1 / 6]]
    by_hand = [sum(qj * (math.log(qj) - math.log(p[t][v])) for qj, v in zip(q[t], ids))
               for t, ids in enumerate([[1, 0], [2, 1]])]
    torch.testing.assert_close(kl[0], torch.tensor(by_hand))
    assert (kl > 0).all()


def test_teacher_token_sets_by_hand() -> None:
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    tokens, label = torch.tensor([[5, 6, 7, 8], [5, 5, 0, 0]]), torch.tensor([[5, 0, 7, 0], [1, 5, 0, 0]])
    entropy = torch.tensor([[0.1, 0.9, 0.5, 0.3], [0.2, 0.6, 9.0, 9.0]])  # padding entropies must not count
    as_lists = lambda kind: teacher_token_mask(kind, mask, tokens, label, entropy, share=0.5).int().tolist()  # noqa: E731
    assert as_lists("all") == mask.tolist()
    assert as_lists("disagree") == [[0, 1, 0, 1], [1, 0, 0, 0]]
    # per row, the median of the real tokens' entropies (0.4 and 0.4) splits them
    assert as_lists("high_entropy") == [[0, 1, 1, 0], [0, 1, 0, 0]]
    assert as_lists("low_entropy") == [[1, 0, 0, 1], [1, 0, 0, 0]]

    # the CE then counts only those tokens, still divided by all response tokens (token-mean)
    logp = torch.log(torch.tensor([[0.5, 0.5]]))
    label_logp = torch.log(torch.tensor([[0.2, 0.4]]))
    x = LossInputs(logp=logp, behaviour_logp=logp, advantages=torch.zeros(1, 2), response_mask=torch.ones(1, 2),
                   label_logp=label_logp, teacher_tokens=torch.tensor([[False, True]]))
    loss, stats = POLICY_LOSSES["vanilla"](x, LossSettings(label_ce_coef=0.1))
    assert stats["label_ce"] == pytest.approx(-math.log(0.4) / 2)
    assert loss.item() == pytest.approx(0.1 * -math.log(0.4) / 2)


def test_tgpo_forms_are_validated(micro_world: Path) -> None:
    base = ["teacher_signal.path=teacher_rewrite", "teacher_signal.ce_coef=0.02", "teacher_signal.form=adv"]
    with pytest.raises(ConfigError, match="form=adv needs optim.epochs=1"):
        load_config(CONFIGS / "tgpo.yaml", TrainConfig, [*base, "optim.epochs=2"])
    with pytest.raises(ConfigError, match="form=adv needs optim.epochs=1"):
        load_config(CONFIGS / "tgpo.yaml", TrainConfig, [*base, "optim.mini_batches=2"])
    with pytest.raises(ConfigError, match="form=adv needs optim.epochs=1"):  # λ comes from the floor alone
        load_config(CONFIGS / "tgpo.yaml", TrainConfig, [*base, "teacher_signal.ce_coef=0",
                                                         "teacher_signal.ce_floor=0.01", "optim.epochs=2"])
    with pytest.raises(ConfigError, match="target=topk needs form=reg"):
        load_config(CONFIGS / "tgpo.yaml", TrainConfig, [*base, "teacher_signal.target=topk"])


def _scored_batch(trainer: Trainer) -> RolloutBatch:
    """One step's rollouts of the trainer's policy, rewarded and scored by its teacher (no update)."""
    idx = trainer.sampler.next_batch()
    rollouts = trainer.engine.generate([trainer.prompt_ids[i] for i in idx], trainer.cfg.rollout.group_size,
                                       SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=32, seed=5))
    batch, _ = trainer.score_with_teacher(trainer.score(rollouts, [trainer.rows[i] for i in idx]))
    return batch.select(torch.arange(batch.size))  # as the update does: copies out of the sampler's inference mode


def test_teacher_variants_on_one_scored_batch(micro_world: Path, tmp_path: Path) -> None:
    cfg = _tiny_run("tgpo.yaml", micro_world, tmp_path / "run", 1, "teacher_signal.ce_decay=0",
                    "teacher_signal.target=topk", "teacher_signal.top_k=4")
    trainer = Trainer(cfg, console=Console(quiet=True))
    batch = _scored_batch(trainer)
    zeros = torch.zeros(batch.size, batch.rollouts.response_ids.shape[1])
    settings = trainer._loss_settings()

    # top-k KL of the whole batch = the token-weighted mean over two micro-batches (select slices B×R×k)
    _, whole = trainer._micro_loss(batch, zeros, settings)
    tokens = batch.rollouts.response_mask.sum(1).float()
    parts = sum(trainer._micro_loss(batch.select(h), zeros[h], settings)[1]["topk_kl"] * float(tokens[h].sum())
                for h in torch.arange(batch.size).chunk(2)) / float(tokens.sum())
    assert whole["topk_kl"] > 0 and parts == pytest.approx(whole["topk_kl"], rel=1e-4)

    # TGPO-Adv: with zero verifier advantages, only the bonus moves the policy-gradient term
    _, without = trainer._micro_loss(batch, zeros, replace(settings, topk_kl_coef=0.0))
    _, with_bonus = trainer._micro_loss(batch, zeros, replace(settings, topk_kl_coef=0.0, label_bonus_coef=0.05))
    assert without["pg_loss"] == 0.0 and with_bonus["pg_loss"] < -1e-4

    # the high-entropy token set keeps a fifth of each row's tokens: its CE sum is a part of the full one
    trainer.cfg.teacher_signal.tokens = "high_entropy"
    _, restricted = trainer._micro_loss(batch, zeros, settings)
    assert 0 < restricted["label_ce"] < whole["label_ce"]


@pytest.mark.parametrize(("extra", "expect"), [
    (("teacher_signal.form=adv", "teacher_signal.ce_coef=0.02"), {"label_bonus_coef": 0.02, "label_ce_coef": 0.0}),
    (("teacher_signal.target=topk", "teacher_signal.top_k=4", "optim.micro_batch_size=16"),
     {"topk_kl_coef": 0.01, "label_ce_coef": 0.0}),
    (("teacher_signal.tokens=high_entropy",), {"label_ce_coef": 0.01}),
])
def test_tgpo_adv_and_topk_train_on_the_micro_world(extra: tuple[str, ...], expect: dict[str, float],
                                                    micro_world: Path, tmp_path: Path) -> None:
    trainer = Trainer(_tiny_run("tgpo.yaml", micro_world, tmp_path / "run", 2, "teacher_signal.ce_decay=0", *extra),
                      console=Console(quiet=True))
    settings = trainer._loss_settings()
    for name, value in expect.items():
        assert getattr(settings, name) == pytest.approx(value)
    m = trainer.train_step()
    assert math.isfinite(m["grad_norm"]) and m["grad_norm"] > 0
    assert m["topk_kl" if "topk_kl_coef" in expect else "label_ce"] > 0


def _tiny_run(config: str, world: Path, out: Path, steps: int, *extra: str) -> TrainConfig:
    return load_config(CONFIGS / config, TrainConfig, [
        f"world={world}", f"output_dir={out}", f"steps={steps}", "save_every=0", "rollout.prompts_per_step=8",
        "rollout.max_new_tokens=32", "optim.micro_batch_size=64", *extra])


@pytest.mark.parametrize("config", ["tgpo.yaml", "rkl_distill.yaml"])
def test_tgpo_and_rkl_configs_train_on_the_micro_world(config: str, micro_world: Path, tmp_path: Path) -> None:
    trainer = Trainer(_tiny_run(config, micro_world, tmp_path / "run", 2), console=Console(quiet=True))
    first, second = trainer.train_step(), trainer.train_step()
    for m in (first, second):
        assert 0.0 <= m["teacher/mismatch_ratio"] <= 1.0
        assert math.isfinite(m["teacher/reverse_kl"]) and math.isfinite(m["grad_norm"]) and m["grad_norm"] > 0
    if config == "tgpo.yaml":
        assert first["teacher/ce_coef"] == pytest.approx(0.01) and second["teacher/ce_coef"] == pytest.approx(0.0099)
        assert first["label_ce"] > 0


def test_tgpo_ce_lowers_the_student_teacher_mismatch(micro_world: Path, tmp_path: Path) -> None:
    """With a strong CE weight, a few steps make the student's samples agree more with the teacher's labels."""
    cfg = _tiny_run("tgpo.yaml", micro_world, tmp_path / "run", 12, "teacher_signal.ce_coef=1.0",
                    "teacher_signal.ce_decay=0", "optim.lr=3e-3")
    trainer = Trainer(cfg, console=Console(quiet=True))
    ratios = [trainer.train_step()["teacher/mismatch_ratio"] for _ in range(12)]
    assert sum(ratios[-3:]) / 3 < sum(ratios[:3]) / 3 - 0.05, ratios


def test_hints_teacher_solutions_and_teacher_signal_compose_in_one_run(micro_world: Path, tmp_path: Path) -> None:
    """Guide's hints, then AMPO's teacher solutions for groups hints did not rescue, and TGPO's CE, together."""
    cfg = _tiny_run("tgpo.yaml", micro_world, tmp_path / "run", 3, "guidance.ladder=[hint,teacher]",
                    "algorithm.loss=mixed", "rollout.prompts_per_step=16")
    trainer = Trainer(cfg, console=Console(quiet=True))
    metrics = [trainer.train_step() for _ in range(3)]
    for m in metrics:
        assert {"hint/rate", "guidance/rate", "teacher/mismatch_ratio", "label_ce"} <= set(m)
        assert m["guidance/rate"] <= m["hint/rate"]  # the teacher rung only sees groups the hints left failing
    assert any(m["hint/rate"] > 0 for m in metrics)
