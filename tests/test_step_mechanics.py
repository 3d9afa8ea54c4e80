"""One real ``Trainer.train_step`` per method on scripted rollouts: the exact rows, flags, advantages and loss.

The engine answers from a script and the models are untrained, so every expected number below is
computed by hand from the rewards and from direct forwards of the same models: nothing depends on what
a model learned, on the machine's float kernels, or on the seed of a world build.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from rich.console import Console
from transformers import AutoModelForCausalLM, AutoTokenizer

from guidedrl.algorithms.advantages import gae
from guidedrl.config import TrainConfig
from guidedrl.rows import RowKind
from guidedrl.seeding import derive_seed
from guidedrl.trainer.loop import Trainer
from guidedrl.yaml_config import load_config
from scripted import ScriptedEngine, build_tiny_world, response_ids, row_logits

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
G = 4
ROWS = [
    {"prompt": "2+3\n", "answer": "5", "hint": "first 2+3=5", "teacher_solutions": [
        {"teacher": "teacher_a", "text": "2+3=5\n\\boxed{5}"},
        {"teacher": "teacher_b", "text": "2+3=6\n\\boxed{6}"},  # wrong: never inserted
        {"teacher": "teacher_b", "text": "2 plus 3 is 5\nso \\boxed{5}"}]},
    {"prompt": "4*2\n", "answer": "8", "hint": "first 4*2=8", "teacher_solutions": [
        {"teacher": "teacher_a", "text": "4*2=8\n\\boxed{8}"}]},
]
MIXED = {"2+3\n": ["\\boxed{5}", "\\boxed{4}", "2+3=5\n\\boxed{5}", "no"], "4*2\n": ["\\boxed{8}"] * G}
ALL_WRONG = {"2+3\n": ["\\boxed{4}", "\\boxed{6}", "7", "\\boxed{1}"], "4*2\n": ["\\boxed{8}"] * G}
EPS = 1e-6


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_world(tmp_path_factory.mktemp("tiny"), ROWS)


def _trainer(world: Path, out: Path, config: str | None, script: dict, *overrides: str,
             logp_offset: float = 0.0) -> Trainer:
    teacher = [f"teacher_signal.path={world / 'models' / 'teacher'}"] if config in TEACHER_CONFIGS else []
    cfg = load_config(CONFIGS / config if config else None, TrainConfig, [
        f"world={world}", f"output_dir={out}", "steps=1", "save_every=0", "rollout.prompts_per_step=2",
        f"rollout.group_size={G}", "rollout.max_new_tokens=32", "optim.micro_batch_size=3", "eval.samples=1",
        "eval.ks=[1]", *teacher, *overrides])
    return Trainer(cfg, console=Console(quiet=True),
                   engine=lambda policy, tok, *_: ScriptedEngine(policy, tok, script, logp_offset))


TEACHER_CONFIGS = ("tgpo.yaml", "rkl_distill.yaml")


def _rows_by_prompt(trainer: Trainer) -> dict[str, list[int]]:
    """Batch row indices of each prompt text (the sampler's order is seeded but not the test's business)."""
    b = trainer.last_batch
    tok = trainer.tokenizer
    prompts = tok.batch_decode([b.rollouts.prompt_ids[i][b.rollouts.prompt_mask[i].bool()] for i in range(b.size)],
                               skip_special_tokens=True)
    out: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        out.setdefault(p, []).append(i)
    return out


def _texts(trainer: Trainer, rows: list[int]) -> list[str]:
    return trainer.last_batch.rollouts.select(rows).response_texts(trainer.tokenizer)


def _row_adv(trainer: Trainer, row: int) -> list[float]:
    """The advantages of one row's real response tokens."""
    b = trainer.last_batch
    return b.advantages[row][b.rollouts.response_mask[row].bool()].tolist()


def _tokens(text: str) -> int:
    return len(text) + 1  # the world's tokenizer has one token per character; the engine appends EOS


def _policy(world: Path):
    return AutoModelForCausalLM.from_pretrained(world / "models" / "student").eval()


def _tok(world: Path):
    return AutoTokenizer.from_pretrained(world / "models" / "student")


def test_grpo_step_rows_advantages_and_clipped_loss(world: Path, tmp_path: Path) -> None:
    # behaviour log-probs 0.5 below the policy's: every ratio is e^0.5 ≈ 1.65, outside 1 ± 0.2
    trainer = _trainer(world, tmp_path / "run", "grpo.yaml", MIXED, logp_offset=-0.5)
    m = trainer.train_step()
    b, rows = trainer.last_batch, _rows_by_prompt(trainer)
    assert b.size == 2 * G and not b.rows_of(RowKind.TEACHER).any() and not b.rows_of(RowKind.HINTED).any()
    assert _texts(trainer, rows["2+3\n"]) == MIXED["2+3\n"]
    assert b.rewards[rows["2+3\n"]].tolist() == [1.0, 0.0, 1.0, 0.0]
    a = 0.5 / (math.sqrt(1 / 3) + EPS)  # mean 0.5, unbiased std sqrt(1/3)
    for row, sign in zip(rows["2+3\n"], (1, -1, 1, -1)):
        assert _row_adv(trainer, row) == pytest.approx([sign * a] * _tokens(MIXED["2+3\n"][rows["2+3\n"].index(row)]))
    assert all(v == 0.0 for row in rows["4*2\n"] for v in _row_adv(trainer, row))  # all right: no signal
    # token-mean of max(−Aρ, −A·clip(ρ)): A > 0 rows are clipped at 1.2, A < 0 rows keep ρ = e^0.5
    lengths = [_tokens(t) for t in MIXED["2+3\n"]]
    total = sum(lengths) + G * _tokens("\\boxed{8}")
    expected = (-a * 1.2 * (lengths[0] + lengths[2]) + a * math.exp(0.5) * (lengths[1] + lengths[3])) / total
    assert m["pg_loss"] == pytest.approx(expected, rel=1e-4)
    assert m["clip_frac"] == pytest.approx((lengths[0] + lengths[2]) / total, rel=1e-6)
    assert m["all_wrong"] == 0.0 and m["all_right"] == 0.5 and m["reward"] == pytest.approx(6 / 8)


def test_ampo_step_inserts_verified_teacher_rows_and_shapes_them(world: Path, tmp_path: Path) -> None:
    """The AMPO preset's math on one update (its two updates per step are the mini-batch mechanism, tested below)."""
    trainer = _trainer(world, tmp_path / "run", "ampo.yaml", ALL_WRONG, "optim.mini_batches=1")
    policy, tok = _policy(world), _tok(world)
    m = trainer.train_step()
    b, rows = trainer.last_batch, _rows_by_prompt(trainer)
    group = rows["2+3\n"]
    assert len(group) == G and m["guidance/teacher/rate"] == 0.5 and m["guidance/teacher/inserted"] == 2.0
    teacher = [r for r in group if b.rows_of(RowKind.TEACHER)[r]]
    right = [ROWS[0]["teacher_solutions"][0]["text"], ROWS[0]["teacher_solutions"][2]["text"]]
    assert sorted(_texts(trainer, teacher)) == sorted(right)  # both verified ones, never the wrong one
    assert sorted(b.source[r] for r in teacher) == ["teacher_a", "teacher_b"]
    kept = [r for r in group if not b.rows_of(RowKind.TEACHER)[r]]
    assert set(_texts(trainer, kept)) <= set(ALL_WRONG["2+3\n"]) and len(kept) == 2
    assert b.rollouts.behaviour_logp[teacher].abs().sum() == 0
    # rewards: 0.9·answer + 0.1·format; the wrong rows kept have one box each or none
    rewards = {r: float(b.rewards[r]) for r in group}
    for r in kept:
        text = _texts(trainer, [r])[0]
        assert rewards[r] == pytest.approx(0.1 if "\\boxed" in text else 0.0)
    for r in teacher:
        assert rewards[r] == pytest.approx(1.0)
    mean = sum(rewards.values()) / G  # dr_grpo: r − mean over the mixed group, no std (norm_adv_by_std=False)
    for r in group:
        assert _row_adv(trainer, r) == pytest.approx([rewards[r] - mean] * _tokens(_texts(trainer, [r])[0]), rel=1e-5)
    # loss: on-policy tokens −A (ratio 1); teacher tokens −A·p/(p+0.1) with p = π_θ(token); Dr.GRPO aggregation:
    # each row's sum over max_new_tokens (32 here), then the mean over the 8 rows
    num = 0.0
    for r in group + rows["4*2\n"]:
        text = _texts(trainer, [r])[0]
        adv = float(b.advantages[r][0])
        if b.rows_of(RowKind.TEACHER)[r]:
            logits = row_logits(policy, tok, "2+3\n", text)
            p = torch.log_softmax(logits, -1).gather(-1, response_ids(tok, text)[:, None]).squeeze(-1).exp()
            num += float((-adv * p / (p + 0.1)).sum()) / 32
        else:
            num += -adv * _tokens(text) / 32
    assert m["pg_loss"] == pytest.approx(num / (2 * G), rel=1e-4)


def test_guide_step_rebuilds_hinted_rows_without_the_hint(world: Path, tmp_path: Path) -> None:
    """The Guide preset's math on one update and without its flat-group filter (both tested on their own)."""
    hinted = "2+3\nhint: first 2+3=5\n"
    script = {**ALL_WRONG, hinted: ["2+3=5\n\\boxed{5}", "\\boxed{3}", "\\boxed{5}", "\\boxed{5}"]}
    trainer = _trainer(world, tmp_path / "run", "guide_grpo.yaml", script, "optim.mini_batches=1",
                       "algorithm.batch_filters=[]")
    policy, tok = _policy(world), _tok(world)
    m = trainer.train_step()
    b, rows = trainer.last_batch, _rows_by_prompt(trainer)
    engine_prompts = trainer.engine.calls
    assert engine_prompts[1] == [hinted]  # one re-roll, of the failed group only, with the hint in its context
    group = rows["2+3\n"]  # the training context holds no hint
    assert "hint: first 2+3=5\n" not in rows and len(group) == G and b.size == 2 * G
    assert all(b.rows_of(RowKind.HINTED)[group]) and not b.rows_of(RowKind.HINTED)[rows["4*2\n"]].any()
    assert _texts(trainer, group) == script[hinted]  # the hinted group replaced the failed one
    assert m["guidance/hint/rate"] == 0.5 and m["guidance/hint/accuracy"] == pytest.approx(3 / 4)
    assert m["guidance/hint/rescued"] == 1.0
    assert b.rewards[group].tolist() == [1.0, 0.0, 1.0, 1.0]  # mean 0.75, unbiased std 0.5
    for r, reward in zip(group, (1.0, 0.0, 1.0, 1.0)):
        expected = (reward - 0.75) / (0.5 + EPS)
        assert _row_adv(trainer, r) == pytest.approx([expected] * _tokens(_texts(trainer, [r])[0]), rel=1e-5)
    # behaviour log-probs are those of the hinted context; the ratio is π(o|q) / π(o|q,h), shaped ρ/(ρ+γ)
    # with γ the 90th percentile of ρ over every hinted token
    ratios, advs = [], []
    for r in group:
        text = _texts(trainer, [r])[0]
        ids = response_ids(tok, text)[:, None]
        plain = torch.log_softmax(row_logits(policy, tok, "2+3\n", text), -1).gather(-1, ids).squeeze(-1)
        with_hint = torch.log_softmax(row_logits(policy, tok, hinted, text), -1).gather(-1, ids).squeeze(-1)
        mask = b.rollouts.response_mask[r].bool()
        torch.testing.assert_close(b.rollouts.behaviour_logp[r][mask], with_hint, atol=1e-5, rtol=0)
        ratios.append((plain - with_hint).exp())
        advs.append(torch.full_like(ratios[-1], float(b.advantages[r][0])))
    rho, adv = torch.cat(ratios), torch.cat(advs)
    gamma = torch.quantile(rho, 0.9)
    count = len(rho) + G * _tokens("\\boxed{8}")
    assert m["pg_loss"] == pytest.approx(float((-adv * rho / (rho + gamma)).sum()) / count, rel=1e-4)


def test_tgpo_step_adds_the_teacher_label_cross_entropy(world: Path, tmp_path: Path) -> None:
    trainer = _trainer(world, tmp_path / "run", "tgpo.yaml", MIXED, "algorithm.regularizers.label_ce.coef=0.5",
                       "optim.mini_batches=1")
    policy, tok = _policy(world), _tok(world)
    teacher = AutoModelForCausalLM.from_pretrained(world / "models" / "teacher").eval()
    m = trainer.train_step()
    b, rows = trainer.last_batch, _rows_by_prompt(trainer)
    ce_sum, mismatched, count, entropy_sum = 0.0, 0, 0, 0.0
    for prompt, idx in rows.items():
        for r in idx:
            text = _texts(trainer, [r])[0]
            ids = response_ids(tok, text)
            label = row_logits(teacher, tok, prompt, text).argmax(-1)
            mask = b.rollouts.response_mask[r].bool()
            assert b.teacher_label[r][mask].tolist() == label.tolist()
            logp = torch.log_softmax(row_logits(policy, tok, prompt, text), -1)
            ce_sum += float(-logp.gather(-1, label[:, None]).sum())
            entropy_sum += float(-(logp.exp() * logp).sum())
            mismatched += int((label != ids).sum())
            count += len(ids)
    assert m["reg/label_ce"] == pytest.approx(ce_sum / count, rel=1e-4)
    assert m["teacher_signal/mismatch_ratio"] == pytest.approx(mismatched / count)
    assert m["coef/label_ce"] == pytest.approx(0.5)
    # GRPO advantages with std (grpo_use_std=True): group 1 rewards 1, 0, 1, 0 → ±a; ratio 1 → pg = −token-mean(A)
    a = 0.5 / (math.sqrt(1 / 3) + EPS)
    lengths = {r: _tokens(_texts(trainer, [r])[0]) for r in rows["2+3\n"]}
    assert {round(float(b.advantages[r][0]), 5) for r in lengths} == {round(a, 5), round(-a, 5)}
    pg = -sum(a * float(torch.sign(b.advantages[r][0])) * n for r, n in lengths.items()) / count
    assert m["pg_loss"] == pytest.approx(pg, abs=1e-5)
    assert m["loss"] == pytest.approx(pg + 0.5 * ce_sum / count - 0.001 * entropy_sum / count, rel=1e-4)


def test_rkl_step_advantage_is_teacher_minus_behaviour_logprob(world: Path, tmp_path: Path) -> None:
    trainer = _trainer(world, tmp_path / "run", "rkl_distill.yaml", MIXED)
    policy, tok = _policy(world), _tok(world)
    teacher = AutoModelForCausalLM.from_pretrained(world / "models" / "teacher").eval()
    m = trainer.train_step()
    rows = _rows_by_prompt(trainer)
    adv_sum, count = 0.0, 0
    for prompt, idx in rows.items():
        for r in idx:
            text = _texts(trainer, [r])[0]
            ids = response_ids(tok, text)[:, None]
            t_logp = torch.log_softmax(row_logits(teacher, tok, prompt, text), -1).gather(-1, ids).squeeze(-1)
            s_logp = torch.log_softmax(row_logits(policy, tok, prompt, text), -1).gather(-1, ids).squeeze(-1)
            assert _row_adv(trainer, r) == pytest.approx((t_logp - s_logp).tolist(), abs=1e-4)
            adv_sum += float((t_logp - s_logp).sum())
            count += len(ids)
    assert m["pg_loss"] == pytest.approx(-adv_sum / count, abs=1e-4)  # ratio 1: −token-mean(A_t)


def test_luffy_step_adds_one_teacher_trace_to_every_group_of_g_minus_one_samples(world: Path, tmp_path: Path) -> None:
    trainer = _trainer(world, tmp_path / "run", "luffy.yaml", MIXED,
                       "guidance.teachers=[{kind: offline, teachers: [teacher_a]}]")
    m = trainer.train_step()
    b, rows = trainer.last_batch, _rows_by_prompt(trainer)
    assert trainer.samples_per_prompt == G - 1  # 3 sampled per prompt
    assert m["guidance/teacher/rate"] == 1.0 and m["guidance/teacher/inserted"] == 2.0  # also the all-right group
    for prompt, solution in (("2+3\n", ROWS[0]["teacher_solutions"][0]["text"]),
                             ("4*2\n", ROWS[1]["teacher_solutions"][0]["text"])):
        group = rows[prompt]
        assert len(group) == G
        assert [_texts(trainer, [r])[0] for r in group if b.rows_of(RowKind.TEACHER)[r]] == [solution]
        assert (sorted(_texts(trainer, [r])[0] for r in group if not b.rows_of(RowKind.TEACHER)[r])
                == sorted(MIXED[prompt][:G - 1]))
    # dr_grpo over the mixed group: 2+3 has rewards 1, 0, 1 sampled + 1 teacher → mean 0.75
    assert sorted(float(b.advantages[r][0]) for r in rows["2+3\n"]) == pytest.approx([-0.75, 0.25, 0.25, 0.25])


def test_at_most_one_solution_per_teacher_when_asked(tmp_path: Path) -> None:
    rows = [dict(ROWS[0], teacher_solutions=[{"teacher": "t", "text": "2+3=5\n\\boxed{5}"},
                                             {"teacher": "t", "text": "so \\boxed{5}"}]), ROWS[1]]
    world = build_tiny_world(tmp_path / "w", rows)
    for per_teacher, inserted in ((1, 1.0), (None, 2.0)):
        trainer = _trainer(world, tmp_path / f"run{per_teacher}", "ampo.yaml", ALL_WRONG,
                           f"guidance.per_teacher={'null' if per_teacher is None else per_teacher}")
        assert trainer.train_step()["guidance/teacher/inserted"] == inserted


def test_ppo_step_whitens_gae_of_a_fresh_critic(world: Path, tmp_path: Path) -> None:
    trainer = _trainer(world, tmp_path / "run", "ppo.yaml", MIXED)
    m = trainer.train_step()
    b = trainer.last_batch
    mask = b.rollouts.response_mask.bool()
    assert b.values[mask].abs().max() == 0  # the value head starts at zero
    # γ = λ = 1 and V = 0: every token's GAE is the row's reward; then whitened over all response tokens
    raw = b.rewards[:, None].expand_as(mask)[mask]
    torch.testing.assert_close(b.advantages[mask], (raw - raw.mean()) / (raw.std() + EPS))
    assert m["critic/value_mean"] == 0.0 and m["critic/return_mean"] == pytest.approx(float(raw.mean()))
    torch.testing.assert_close(b.returns[mask], raw)  # the critic's stage: GAE returns once, on the batch


def test_the_critic_runs_gae_once_and_fits_the_returns_it_put_on_the_batch(world: Path, tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The critic owns γ/λ: one GAE per step (in its stage), and its fit regresses on the batch's returns."""
    import guidedrl.trainer.critic as critic_module
    trainer = _trainer(world, tmp_path / "run", "ppo.yaml", MIXED, "critic.gamma=0.9", "critic.lam=0.8")
    calls, fitted = [], []
    real_gae, real_fit = critic_module.gae, trainer.signals.critic.fit
    monkeypatch.setattr(critic_module, "gae", lambda *a, **k: calls.append(a[3:]) or real_gae(*a, **k))
    monkeypatch.setattr(trainer.signals.critic, "fit", lambda r, v, ret: fitted.append(ret) or real_fit(r, v, ret))
    trainer.train_step()
    b = trainer.last_batch
    assert calls == [(0.9, 0.8)]
    assert fitted[0] is b.returns
    torch.testing.assert_close(b.returns, gae(b.rewards, b.values, b.rollouts.response_mask, 0.9, 0.8)[1])


METHODS = [("grpo.yaml", MIXED, ()), ("ampo.yaml", ALL_WRONG, ()),
           ("luffy.yaml", MIXED, ("guidance.teachers=[{kind: offline, teachers: [teacher_a]}]",)),
           ("guide_grpo.yaml", {**ALL_WRONG, "2+3\nhint: first 2+3=5\n": ["\\boxed{5}", "1", "\\boxed{5}", "2"]}, ()),
           ("tgpo.yaml", MIXED, ()), ("rkl_distill.yaml", MIXED, ()), ("ppo.yaml", MIXED, ()),
           ("tgpo.yaml", MIXED, ("teacher_signal.top_k=3", "algorithm.regularizers.topk_kl.coef=0.1")),
           ("grpo.yaml", MIXED, ("algorithm.regularizers.kl.coef=0.1", "algorithm.agg_mode=seq-mean-token-sum-norm",
                                 "algorithm.regularizers.entropy.coef=0.01",
                                 "algorithm.regularizers.entropy.agg_mode=token-mean"))]


def _step_with_grad(trainer: Trainer) -> tuple[dict[str, float], torch.Tensor]:
    """One step's metrics and the accumulated gradient the optimizer stepped with (all parameters, flattened)."""
    grads = []
    trainer.optimizer.register_step_pre_hook(lambda opt, args, kwargs: grads.append(torch.cat(
        [p.grad.flatten() for group in opt.param_groups for p in group["params"] if p.grad is not None])))
    return trainer.train_step(), grads[0]


# how a step's forwards are cut: rows per forward, padded tokens per forward, positions per logits chunk
CUTS = [("optim.micro_batch_size=8", "memory.tokens_per_forward=null", "memory.logits_chunk=null"),
        ("optim.micro_batch_size=1",), ("optim.micro_batch_size=3",),
        ("optim.micro_batch_size=8", "memory.tokens_per_forward=40", "memory.logits_chunk=7")]


@pytest.mark.parametrize(("config", "script", "extra"), METHODS)
def test_the_update_does_not_depend_on_how_forwards_are_cut(config: str, script: dict, extra: tuple,
                                                            world: Path, tmp_path: Path) -> None:
    """micro_batch_size, tokens_per_forward and logits_chunk are memory settings: the same step with whole
    forwards, 1 or 3 rows per forward, or 40 padded tokens per forward and logits 7 positions at a time gives
    the same loss and the same accumulated gradient at the optimizer step (to float rounding)."""
    results = []
    for i, cut in enumerate(CUTS):
        trainer = _trainer(world, tmp_path / f"run{i}", config, script, *cut, *extra, logp_offset=-0.3)
        m, grad = _step_with_grad(trainer)
        results.append((m["loss"], grad))
    scale = float(results[0][1].abs().max())
    for loss, grad in results[1:]:
        assert loss == pytest.approx(results[0][0], rel=1e-5, abs=1e-7)
        torch.testing.assert_close(grad, results[0][1], atol=1e-5 * scale, rtol=0)


def test_epochs_and_mini_batches_make_that_many_optimizer_steps(world: Path, tmp_path: Path) -> None:
    trainer = _trainer(world, tmp_path / "run", "grpo.yaml", MIXED, "optim.epochs=2", "optim.mini_batches=2")
    steps = []
    trainer.optimizer.register_step_post_hook(lambda opt, args, kwargs: steps.append(1))
    before = [p.detach().clone() for p in trainer.policy.parameters()]
    m = trainer.train_step()
    assert len(steps) == 4 and trainer.optimizer.state_dict()["state"][0]["step"] == 4
    assert any(not torch.equal(a, p) for a, p in zip(before, trainer.policy.parameters()))
    # later updates see a policy that moved: their ratios leave 1, so the mean over the 4 updates does too
    assert m["ratio_mean"] != pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("selection", ["first", "random"])
def test_selection_first_keeps_pool_order_and_random_is_seeded(selection: str, world: Path, tmp_path: Path) -> None:
    picked = []
    for seed in (0, 0, 1):
        trainer = _trainer(world, tmp_path / f"run{seed}{len(picked)}", "ampo.yaml", ALL_WRONG,
                           f"guidance.selection={selection}", "guidance.num_guidance=1", f"seed={seed}")
        trainer.train_step()
        b = trainer.last_batch
        picked.append(_texts(trainer, [r for r in range(b.size) if b.rows_of(RowKind.TEACHER)[r]]))
    verified = [ROWS[0]["teacher_solutions"][0]["text"], ROWS[0]["teacher_solutions"][2]["text"]]
    if selection == "first":
        assert picked == [[verified[0]]] * 3  # pool order, whatever the seed
    else:
        assert picked[0] == picked[1] and all(p[0] in verified for p in picked)  # the same seed picks the same


def test_hints_come_from_a_verified_teacher_solution_without_a_hint_column(tmp_path: Path) -> None:
    rows = [{k: v for k, v in r.items() if k != "hint"} for r in ROWS]
    world = build_tiny_world(tmp_path / "w", rows)
    hinted = "2+3\nhint: 2+3=5\n"  # the first line of the first verified solution; never of the wrong one
    trainer = _trainer(world, tmp_path / "run", "guide_grpo.yaml", {**ALL_WRONG, hinted: ["\\boxed{5}"] * G})
    m = trainer.train_step()
    assert trainer.engine.calls[1] == [hinted] and m["guidance/hint/rate"] == 0.5


def test_the_flat_group_filter_drops_groups_without_signal(world: Path, tmp_path: Path) -> None:
    trainer = _trainer(world, tmp_path / "run", "grpo.yaml", MIXED, "algorithm.batch_filters=[flat_groups]")
    m = trainer.train_step()
    rows = _rows_by_prompt(trainer)
    assert m["filtered_rows"] == 0.5 and list(rows) == ["2+3\n"] and "grad_norm" in m
    flat = _trainer(world, tmp_path / "flat", "grpo.yaml", ALL_WRONG | {"2+3\n": ["x"] * G},
                    "algorithm.batch_filters=[flat_groups]")
    before = [p.detach().clone() for p in flat.policy.parameters()]
    m = flat.train_step()
    assert m["filtered_rows"] == 1.0 and "grad_norm" not in m and flat.step == 1 and flat.last_batch is None
    assert all(torch.equal(a, b) for a, b in zip(before, flat.policy.parameters()))


CORRECTION = "algorithm.rollout_correction={{level: {level}, mode: {mode}, threshold: 2.0}}"
UNCLIPPED = "optim.grad_clip=1.0e9"  # gradients compared unclipped


def test_rollout_correction_weights_the_students_tokens_by_the_samplers_gap(world: Path, tmp_path: Path) -> None:
    """A sampler whose log-probs are 0.3 below the training forward's: with one update and no recompute, π_old is
    the forward's own (the ratio stays 1) and every own token weighs exp(0.3), so the gradient is exp(0.3) times
    the gradient with an exact sampler; at 1.0 below, exp(1) > 2: truncated to 2, or every token masked."""
    token = CORRECTION.format(level="token", mode="truncate"), UNCLIPPED
    m0, g0 = _step_with_grad(_trainer(world, tmp_path / "exact", "grpo.yaml", MIXED, *token))
    m1, g1 = _step_with_grad(_trainer(world, tmp_path / "gap", "grpo.yaml", MIXED, *token, logp_offset=-0.3))
    assert m0["rollout_correction/weight_mean"] == pytest.approx(1.0)
    assert m1["rollout_correction/weight_mean"] == pytest.approx(math.exp(0.3), rel=1e-5)
    assert m1["ratio_mean"] == pytest.approx(1.0) and m1["rollout_correction/masked_frac"] == 0.0
    assert "behaviour_logp_gap" not in m1  # no extra forward
    torch.testing.assert_close(g1, math.exp(0.3) * g0, atol=1e-6 * float(g0.abs().max()), rtol=1e-4)
    m2, g2 = _step_with_grad(_trainer(world, tmp_path / "far", "grpo.yaml", MIXED, *token, logp_offset=-1.0))
    assert m2["rollout_correction/weight_mean"] == pytest.approx(2.0, rel=1e-6)
    torch.testing.assert_close(g2, 2.0 * g0, atol=1e-6 * float(g0.abs().max()), rtol=1e-4)
    masked = CORRECTION.format(level="token", mode="mask")
    m3, g3 = _step_with_grad(_trainer(world, tmp_path / "masked", "grpo.yaml", MIXED, masked, logp_offset=-1.0))
    assert m3["rollout_correction/masked_frac"] == 1.0 and m3["rollout_correction/weight_mean"] == 0.0
    assert g3.abs().max() == 0


def test_sequence_level_correction_weighs_each_row_by_its_summed_gap(world: Path, tmp_path: Path) -> None:
    trainer = _trainer(world, tmp_path / "run", "grpo.yaml", MIXED, CORRECTION.format(level="sequence",
                                                                                     mode="truncate"),
                       logp_offset=-0.3)
    m = trainer.train_step()
    lengths = trainer.last_batch.rollouts.response_mask.sum(1)
    expected = sum(float(n) * min(math.exp(0.3 * float(n)), 2.0) for n in lengths) / float(lengths.sum())
    assert m["rollout_correction/weight_mean"] == pytest.approx(expected, rel=1e-5)


def test_rollout_correction_over_several_updates_takes_pi_old_from_one_no_grad_forward(world: Path,
                                                                                      tmp_path: Path) -> None:
    """Two mini-batches: π_old cannot be the live forward's after the first update, so the behaviour log-probs
    are recomputed once (the gap to the sampler is the offset) and the sampler's kept for the weights."""
    trainer = _trainer(world, tmp_path / "run", "grpo.yaml", MIXED, CORRECTION.format(level="token",
                                                                                     mode="truncate"),
                       "optim.mini_batches=2", logp_offset=-0.3)
    m = trainer.train_step()
    assert m["behaviour_logp_gap"] == pytest.approx(0.3, rel=1e-5)
    assert m["rollout_correction/weight_mean"] == pytest.approx(math.exp(0.3), rel=1e-5)


def test_refill_draws_fresh_prompts_until_the_step_has_its_informative_groups(world: Path, tmp_path: Path) -> None:
    """Two prompts per step, 4*2 always solved (a flat group): round 1 keeps 2+3 only, so a second round draws
    the next two prompts with seeds of their own; 2+3 is kept again and the step trains on two 2+3 groups."""
    trainer = _trainer(world, tmp_path / "run", "grpo.yaml", MIXED, "algorithm.batch_filters=[flat_groups]",
                       "algorithm.refill={max_generation_rounds: 3}")
    seeds = []
    generate = trainer.engine.generate
    trainer.engine.generate = lambda prompts, n, sampling: seeds.append(sampling.seeds) or generate(prompts, n,
                                                                                                    sampling)
    m = trainer.train_step()
    assert m["refill/rounds"] == 2 and m["refill/groups"] == 2
    assert [sorted(texts) for texts in trainer.engine.calls] == [["2+3\n", "4*2\n"]] * 2
    assert seeds == [tuple(derive_seed(0, "rollout", 0, i) for i in range(2)),
                     tuple(derive_seed(0, "rollout", 0, 2 + i) for i in range(2))]
    b = trainer.last_batch
    assert b.group_index.tolist() == [0] * G + [1] * G
    assert set(_rows_by_prompt(trainer)) == {"2+3\n"}
    assert trainer.sampler.state_dict() == {"epoch": 2, "position": 0}  # both rounds' prompts drawn (resume)


def test_refill_stops_after_its_rounds_and_a_step_with_no_group_left_makes_no_update(world: Path,
                                                                                     tmp_path: Path) -> None:
    trainer = _trainer(world, tmp_path / "run", "grpo.yaml", {**ALL_WRONG, "2+3\n": ["no"] * G},
                       "algorithm.batch_filters=[flat_groups]", "algorithm.refill={max_generation_rounds: 2}")
    m = trainer.train_step()
    assert m["refill/rounds"] == 2 and m["refill/groups"] == 0
    assert trainer.last_batch is None and "updates" not in m and len(trainer.engine.calls) == 2


def test_refill_without_a_batch_filter_is_refused() -> None:
    with pytest.raises(ValueError, match="refill: refills the groups a batch filter drops"):
        TrainConfig.model_validate({"algorithm": {"refill": {"max_generation_rounds": 2}}})


def test_grad_norm_by_kind_measures_each_kinds_share_and_changes_no_update(world: Path, tmp_path: Path) -> None:
    """GRPO has only the student's own tokens: their term's gradient is the whole gradient (no regularizer).
    AMPO's teacher rows get a norm of their own, and the diagnostic leaves the update as it was."""
    m, g = _step_with_grad(_trainer(world, tmp_path / "grpo", "grpo.yaml", MIXED, "optim.grad_norm_by_kind=true",
                                    UNCLIPPED))
    assert set(k for k in m if k.startswith("grad_norm/")) == {"grad_norm/policy"}
    assert m["grad_norm/policy"] == pytest.approx(m["grad_norm"], rel=1e-5)
    assert m["grad_norm"] == pytest.approx(float(g.norm()), rel=1e-5)
    on, g_on = _step_with_grad(_trainer(world, tmp_path / "on", "ampo.yaml", ALL_WRONG, "optim.grad_norm_by_kind=true"))
    off, g_off = _step_with_grad(_trainer(world, tmp_path / "off", "ampo.yaml", ALL_WRONG))
    assert on["grad_norm/teacher"] > 0 and "grad_norm/teacher" not in off
    assert torch.equal(g_on, g_off)
