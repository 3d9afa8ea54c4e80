"""TGPO / reverse-KL distillation: the teacher's view of the student's rollouts, the terms it feeds, the wiring.

Models are untrained (the tiny world) and rollouts scripted, so every number is computed by hand or by a
direct forward of the same models.
"""

from __future__ import annotations

import inspect
import math
import shutil
from pathlib import Path

import pytest
import torch
from rich.console import Console
from tokenizers import Tokenizer, models
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from guidedrl.algorithms.advantages import AdvantageInputs
from guidedrl.algorithms.distill import teacher_token_mask
from guidedrl.algorithms.losses import LossInputs, policy_loss
from guidedrl.algorithms.regularizers import topk_forward_kl
from guidedrl.batch import RolloutBatch
from guidedrl.config import AlgorithmConfig, TrainConfig
from guidedrl.data import encode_prompts
from guidedrl.registry import ADVANTAGE_ADDONS, ADVANTAGES
from guidedrl.rollout.engine import SamplingParams
from guidedrl.rollout.forward import ResponseLogprobs, response_logprobs
from guidedrl.rollout.hf_engine import HFEngine
from guidedrl.rows import RowKind
from guidedrl.teachers.model import FrozenTeacher, TokenizerMismatchError
from guidedrl.teachers.signal import STUDENT_VIEWS
from guidedrl.trainer.loop import Trainer
from guidedrl.yaml_config import ConfigError, load_config
from scripted import ScriptedEngine, build_tiny_world, response_ids, row_logits

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ROWS = [{"prompt": "2+3\n", "answer": "5", "hint": "first 2+3=5"},
        {"prompt": "4*2\n", "answer": "8", "hint": "first 4*2=8"}]
SCRIPT = {"2+3\n": ["\\boxed{5}", "\\boxed{4}", "2+3=5\n\\boxed{5}", "no"], "4*2\n": ["\\boxed{8}", "x"] * 2}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_world(tmp_path_factory.mktemp("tiny"), ROWS)


def _tgpo(world: Path, out: Path, *overrides: str, script: dict = SCRIPT) -> Trainer:
    cfg = load_config(CONFIGS / "tgpo.yaml", TrainConfig, [
        f"world={world}", f"output_dir={out}", "steps=1", "save_every=0", "rollout.prompts_per_step=2",
        "rollout.group_size=4", "rollout.max_new_tokens=32", "optim.micro_batch_size=3",
        f"teacher_signal.path={world / 'models' / 'teacher'}", *overrides])
    return Trainer(cfg, console=Console(quiet=True), engine=lambda p, t, *_: ScriptedEngine(p, t, script))


def _logp(model, tok, prompt: str, text: str) -> torch.Tensor:
    """log-softmax (R×V) of a model at every position of ``text`` after ``prompt``."""
    return torch.log_softmax(row_logits(model, tok, prompt, text), -1)


def test_teacher_logprobs_on_student_prefixes_equal_a_direct_forward(world: Path) -> None:
    tok = AutoTokenizer.from_pretrained(world / "models" / "student")
    student = AutoModelForCausalLM.from_pretrained(world / "models" / "student").eval()
    prompts = encode_prompts(tok, ["3+4*2\n", "9-2\n", "5*5-7+1\n"])
    rollouts = HFEngine(student, tok.pad_token_id, tok.eos_token_id).generate(
        prompts, 2, SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=24, seed=3))
    pred = FrozenTeacher.load(str(world / "models" / "teacher"), tok, top_k=3).predict(rollouts)
    teacher = AutoModelForCausalLM.from_pretrained(world / "models" / "teacher").eval()
    for row in range(rollouts.size):  # one unpadded sequence at a time, no shared batching
        p = [t for t, m in zip(rollouts.prompt_ids[row].tolist(), rollouts.prompt_mask[row].tolist()) if m]
        n = int(rollouts.response_mask[row].sum())
        r = rollouts.response_ids[row, :n].tolist()
        with torch.no_grad():
            logits = teacher(torch.tensor([p + r])).logits[0, len(p) - 1:len(p) - 1 + n]
        direct = torch.log_softmax(logits.float(), -1)
        torch.testing.assert_close(pred.logp[row, :n], direct.gather(-1, torch.tensor(r)[:, None]).squeeze(-1),
                                   atol=1e-4, rtol=1e-4)
        assert pred.label[row, :n].tolist() == direct.argmax(-1).tolist()
        top = direct.topk(3, dim=-1)
        assert pred.topk_ids[row, :n].tolist() == top.indices.tolist()
        torch.testing.assert_close(pred.topk_logp[row, :n], top.values, atol=1e-4, rtol=1e-4)
        assert pred.logp[row, n:].abs().sum() == 0


def test_mismatched_tokenizers_and_oversized_top_k_are_refused(world: Path, tmp_path: Path) -> None:
    other = tmp_path / "other_teacher"
    shutil.copytree(world / "models" / "teacher", other)
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "x": 4, "+": 5}  # ids mean other tokens
    PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<unk>")),
                            pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(other)
    student_tok = AutoTokenizer.from_pretrained(world / "models" / "student")
    with pytest.raises(TokenizerMismatchError, match="does not match the student's"):
        FrozenTeacher.load(str(other), student_tok)
    with pytest.raises(ConfigError, match="teacher_signal.path"):
        _tgpo(world, tmp_path / "run", f"teacher_signal.path={other}")
    with pytest.raises(ConfigError, match=r"top_k 450 exceeds the student's vocabulary \(62 tokens\)"):
        _tgpo(world, tmp_path / "run2", "teacher_signal.top_k=450", "algorithm.regularizers.topk_kl.coef=0.01")


def test_pieces_that_read_the_teacher_require_one() -> None:
    for overrides in (["algorithm.advantage=rkl"], ["algorithm.regularizers.kdrl.coef=0.002"],
                      ["algorithm.advantage_addons.label_bonus.coef=0.02"],
                      ["algorithm.advantage_addons.reverse_kl.coef=0.1"]):
        with pytest.raises(ConfigError, match=r"teacher_signal.path \(or .server, .teachers, a self_\* source\) is "
                                              r"required by algorithm"):
            load_config(None, TrainConfig, overrides)
    cfg = load_config(None, TrainConfig, ["algorithm.regularizers.label_ce.coef=0"])  # never active: no teacher
    assert cfg.needs() == frozenset()


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
    torch.testing.assert_close(ADVANTAGES.get("rkl")(x)[0], torch.tensor(expected_adv))
    # combined with RLVR: A + w·(log π_T − log π_old)
    torch.testing.assert_close(ADVANTAGE_ADDONS.get("reverse_kl")(torch.full((1, 2), 0.5), x, 0.1)[0],
                               0.5 + 0.1 * torch.tensor(expected_adv))

    # TGPO: GRPO surrogate (ratio 1 at the behaviour policy) + λ·mean_t −log π_θ(argmax π_T)
    label = t_all.argmax(-1)  # [1, 0] (tie at t=1 resolves to the first)
    label_logp = logp_all.gather(-1, label[..., None]).squeeze(-1)
    lam = 0.05
    loss, stats = policy_loss(LossInputs(logp=logp, behaviour_logp=behaviour, advantages=torch.tensor([[0.7, 0.7]]),
                                         response_mask=mask, kind=torch.tensor([0]), label_logp=label_logp),
                              AlgorithmConfig(regularizers={"label_ce": {"coef": lam}}), 1, 2)
    ce = -(ls([2.0, 1.0, 0.0])[1] + ls([0.0, 0.0, 1.0])[0]) / 2
    assert loss.item() == pytest.approx(-0.7 + lam * ce, abs=1e-6)
    assert stats["reg/label_ce"] == pytest.approx(ce, abs=1e-6)
    loss.backward()
    # d loss / d logit of token 1 at position 0, token-mean over 2 tokens: the PG term −0.7·ρ(token 0) gives
    # +0.7·p1, the CE on label 1 gives λ·(p1 − 1)
    p1 = math.exp(ls([2.0, 1.0, 0.0])[1])
    assert student_logits.grad[0, 0, 1].item() == pytest.approx(0.5 * (0.7 * p1 + lam * (p1 - 1)), abs=1e-6)


def test_topk_forward_kl_on_a_tiny_vocabulary() -> None:
    p = [[math.exp(v) for v in row] for row in torch.log_softmax(torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 1.0]]),
                                                                   -1).tolist()]
    # the teacher's 2 best tokens at each position, renormalized over those 2
    teacher_topk_logp = torch.log(torch.tensor([[[0.6, 0.2], [0.5, 0.1]]]))
    topk_ids = [[1, 0], [2, 1]]
    student_topk = torch.log(torch.tensor([[[p[t][v] for v in ids] for t, ids in enumerate(topk_ids)]]))
    kl = topk_forward_kl(student_topk, teacher_topk_logp)
    q = [[0.75, 0.25], [5 / 6, 1 / 6]]
    by_hand = [sum(qj * (math.log(qj) - math.log(p[t][v])) for qj, v in zip(q[t], ids))
               for t, ids in enumerate(topk_ids)]
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
    x = LossInputs(logp=logp, behaviour_logp=logp, advantages=torch.zeros(1, 2), response_mask=torch.ones(1, 2),
                   kind=torch.tensor([0]), label_logp=torch.log(torch.tensor([[0.2, 0.4]])),
                   teacher_tokens=torch.tensor([[False, True]]))
    loss, stats = policy_loss(x, AlgorithmConfig(regularizers={"label_ce": {"coef": 0.1}}), 1, 2)
    assert stats["reg/label_ce"] == pytest.approx(-math.log(0.4) / 2)
    assert loss.item() == pytest.approx(0.1 * -math.log(0.4) / 2)


def test_tgpo_adv_adds_pi_old_of_the_label_to_the_advantages(world: Path, tmp_path: Path) -> None:
    """TGPO-Adv in a real step: A_t = GRPO advantage + λ·π_old(ŷ_t) on the student's own tokens, with two
    updates per step (π_old is read before the first update, so it is exact for any number of updates)."""
    trainer = _tgpo(world, tmp_path / "run", "algorithm.regularizers.label_ce.coef=0",
                    "algorithm.advantage_addons.label_bonus.coef=0.2", "optim.mini_batches=2")
    policy = AutoModelForCausalLM.from_pretrained(world / "models" / "student").eval()
    teacher = AutoModelForCausalLM.from_pretrained(world / "models" / "teacher").eval()
    tok = trainer.tokenizer
    trainer.train_step()
    b = trainer.last_batch
    texts = b.rollouts.response_texts(tok)
    prompts = tok.batch_decode([b.rollouts.prompt_ids[i][b.rollouts.prompt_mask[i].bool()] for i in range(b.size)],
                               skip_special_tokens=True)
    for row, (prompt, text) in enumerate(zip(prompts, texts)):
        label = _logp(teacher, tok, prompt, text).argmax(-1)
        p_old = _logp(policy, tok, prompt, text).gather(-1, label[:, None]).squeeze(-1).exp()
        group = torch.tensor([float(b.rewards[r]) for r in range(b.size) if prompts[r] == prompt])
        expected = (float(b.rewards[row]) - group.mean()) / (group.std() + 1e-6) + 0.2 * p_old
        mask = b.rollouts.response_mask[row].bool()
        torch.testing.assert_close(b.advantages[row][mask], expected, atol=1e-5, rtol=1e-5)


def test_topk_kl_in_a_real_step_equals_the_hand_computed_mean(world: Path, tmp_path: Path) -> None:
    trainer = _tgpo(world, tmp_path / "run", "algorithm.regularizers.label_ce.coef=0", "teacher_signal.top_k=4",
                    "algorithm.regularizers.topk_kl.coef=0.05", "optim.mini_batches=1")
    policy = AutoModelForCausalLM.from_pretrained(world / "models" / "student").eval()
    teacher = AutoModelForCausalLM.from_pretrained(world / "models" / "teacher").eval()
    tok = trainer.tokenizer
    m = trainer.train_step()
    total, count = 0.0, 0
    for prompt, texts in SCRIPT.items():
        for text in texts:
            t = _logp(teacher, tok, prompt, text)
            top = t.topk(4, -1)
            s = _logp(policy, tok, prompt, text).gather(-1, top.indices)
            total += float(topk_forward_kl(s[None], top.values[None]).sum())
            count += len(response_ids(tok, text))
    assert m["reg/topk_kl"] == pytest.approx(total / count, rel=1e-4)


def test_hints_teacher_solutions_and_teacher_signal_compose_in_one_step(world: Path, tmp_path: Path) -> None:
    """Guide's hints first, then AMPO's teacher solutions for the groups hints did not rescue, and TGPO's CE."""
    rows = [dict(ROWS[0], teacher_solutions=[{"teacher": "t", "text": "2+3=5\n\\boxed{5}"}]),
            dict(ROWS[1], teacher_solutions=[{"teacher": "t", "text": "4*2=8\n\\boxed{8}"}])]
    composed = build_tiny_world(tmp_path / "w", rows)
    script = {"2+3\n": ["\\boxed{1}"] * 4, "4*2\n": ["\\boxed{1}"] * 4,
              "2+3\nhint: first 2+3=5\n": ["\\boxed{5}", "x", "x", "x"],  # the hint rescues this group
              "4*2\nhint: first 4*2=8\n": ["x"] * 4}  # this one only a teacher rescues
    trainer = _tgpo(composed, tmp_path / "run", "guidance.ladder=[hint,teacher]", "guidance.num_guidance=1",
                    script=script)
    m = trainer.train_step()
    b, tok = trainer.last_batch, trainer.tokenizer
    texts = b.rollouts.response_texts(tok)
    assert m["guidance/hint/rate"] == 1.0 and m["guidance/hint/rescued"] == 0.5
    assert m["guidance/teacher/rate"] == 0.5 and m["guidance/teacher/inserted"] == 1.0
    assert (sorted(t for t, h in zip(texts, b.rows_of(RowKind.HINTED).tolist()) if h)
            == sorted(["\\boxed{5}", "x", "x", "x", "x", "x", "x"]))
    assert [t for t, o in zip(texts, b.rows_of(RowKind.TEACHER).tolist()) if o] == ["4*2=8\n\\boxed{8}"]
    assert b.size == 8 and "reg/label_ce" in m and "teacher_signal/mismatch_ratio" in m


# ---- several teachers routed per row, and the student itself with privileged context ----------------------
def _distill(world: Path, out: Path, *overrides: str, script: dict = SCRIPT) -> Trainer:
    """TGPO's preset with the teacher_signal given by ``overrides`` (its single teacher path unset)."""
    cfg = load_config(CONFIGS / "tgpo.yaml", TrainConfig, [
        f"world={world}", f"output_dir={out}", "steps=1", "save_every=0", "rollout.prompts_per_step=2",
        "rollout.group_size=4", "rollout.max_new_tokens=32", "optim.micro_batch_size=3", "teacher_signal.path=null",
        *overrides])
    return Trainer(cfg, console=Console(quiet=True), engine=lambda p, t, *_: ScriptedEngine(p, t, script))


def _prompts(trainer: Trainer) -> list[str]:
    b, tok = trainer.last_batch, trainer.tokenizer
    return tok.batch_decode([b.rollouts.prompt_ids[i][b.rollouts.prompt_mask[i].bool()] for i in range(b.size)],
                            skip_special_tokens=True)


def test_rows_routed_by_a_column_are_scored_by_their_own_teacher(tmp_path: Path) -> None:
    rows = [dict(ROWS[0], data_source="arith"), dict(ROWS[1], data_source="mult")]
    world = build_tiny_world(tmp_path / "w", rows)
    teachers = {"arith": world / "models" / "teacher", "mult": world / "models" / "student"}  # two different models
    trainer = _distill(world, tmp_path / "run", "teacher_signal.route_by=data_source",
                       *[f"teacher_signal.teachers.{k}.path={v}" for k, v in teachers.items()],
                       "teacher_signal.routes={arith: arith, mult: mult}")
    m = trainer.train_step()
    b, tok = trainer.last_batch, trainer.tokenizer
    models = {k: AutoModelForCausalLM.from_pretrained(v).eval() for k, v in teachers.items()}
    for row, (prompt, text) in enumerate(zip(_prompts(trainer), b.rollouts.response_texts(tok))):
        model = models["arith" if prompt == "2+3\n" else "mult"]
        direct = _logp(model, tok, prompt, text)
        mask = b.rollouts.response_mask[row].bool()
        expected = direct.gather(-1, response_ids(tok, text)[:, None]).squeeze(-1)
        torch.testing.assert_close(b.teacher_logp[row][mask], expected, atol=1e-5, rtol=1e-5)
        assert b.teacher_label[row][mask].tolist() == direct.argmax(-1).tolist()
    assert {"teacher_signal/arith/mismatch_ratio", "teacher_signal/mult/reverse_kl"} <= set(m)


def test_a_row_no_route_takes_is_refused_at_start_unless_there_is_a_default(tmp_path: Path) -> None:
    rows = [dict(ROWS[0], data_source="arith"), dict(ROWS[1], data_source="geometry")]
    world = build_tiny_world(tmp_path / "w", rows)
    sets = ["teacher_signal.route_by=data_source", f"teacher_signal.teachers.t.path={world / 'models' / 'teacher'}",
            f"teacher_signal.teachers.s.path={world / 'models' / 'student'}", "teacher_signal.routes={arith: t}"]
    with pytest.raises(ConfigError, match=r"train.jsonl: row 1: data_source='geometry' is in no teacher_signal.routes "
                                          r"\(arith\) and there is no default_teacher"):
        _distill(world, tmp_path / "run", *sets)
    _distill(world, tmp_path / "run2", *sets, "teacher_signal.default_teacher=s").train_step()


@pytest.mark.parametrize("source, field", [("self_with_hint", "hint"), ("self_with_solution", "solution")])
def test_the_student_with_privileged_context_scores_its_own_hint_free_rollout(source: str, field: str,
                                                                                 tmp_path: Path) -> None:
    rows = [dict(r, solution=f"{r['prompt'].strip()}={r['answer']}") for r in ROWS]
    world = build_tiny_world(tmp_path / "w", rows)
    trainer = _distill(world, tmp_path / "run", f"teacher_signal.source={source}")
    m = trainer.train_step()
    b, tok = trainer.last_batch, trainer.tokenizer
    initial = AutoModelForCausalLM.from_pretrained(world / "models" / "student").eval()  # the run's initial policy
    context = {r["prompt"]: r[field] for r in rows}
    for row, (prompt, text) in enumerate(zip(_prompts(trainer), b.rollouts.response_texts(tok))):
        hinted = f"{prompt}hint: {context[prompt]}\n"  # guidance.hint_template's way, in the teacher's prompt only
        direct = _logp(initial, tok, hinted, text)
        mask = b.rollouts.response_mask[row].bool()
        expected = direct.gather(-1, response_ids(tok, text)[:, None]).squeeze(-1)
        torch.testing.assert_close(b.teacher_logp[row][mask], expected, atol=1e-5, rtol=1e-5)
        assert prompt in ROWS[0]["prompt"] + ROWS[1]["prompt"]  # the student's own context holds no hint
    assert m["teacher_signal/no_context"] == 0.0 and "reg/label_ce" in m


def test_every_student_view_the_signal_declares_reaches_the_loss() -> None:
    """STUDENT_VIEWS is the one declaration of what the teacher signal adds to the training forward: each entry
    names a batch field, an argument of the forward, a field of its output and a loss input, all existing."""
    params = inspect.signature(response_logprobs).parameters
    assert STUDENT_VIEWS
    for need, (field, arg) in STUDENT_VIEWS.items():
        assert need in LossInputs.__dataclass_fields__ and need in ResponseLogprobs._fields
        assert field in RolloutBatch.__dataclass_fields__ and arg in params
