"""Rollout batch, HF engine and the training-time log-prob forward."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

from guidedrl.algorithms.logprobs import entropy_from_logits, token_logprobs
from guidedrl.rollout.engine import Rollouts, SamplingParams
from guidedrl.rollout.forward import position_ids_from_mask, response_logprobs
from guidedrl.rollout.hf_engine import HFEngine

TEXTS = ["1+1=", "12*(3+4)=", "x^2-5x+6=0;x=", "7"]


@pytest.fixture(scope="module")
def prompts(tokenizer) -> list[list[int]]:
    return tokenizer(TEXTS)["input_ids"]


@pytest.fixture(scope="module")
def engine(model, tokenizer) -> HFEngine:
    return HFEngine(model, tokenizer.pad_token_id, tokenizer.eos_token_id)


@contextmanager
def eos_bias(model, eos_id: int, bias: float) -> Iterator[None]:
    """Shift the EOS logit, so rows end at varied lengths (or never, with a large negative bias)."""
    def hook(_module, _inputs, logits):
        logits[..., eos_id] += bias
        return logits
    handle = model.lm_head.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def check_layout(r: Rollouts, pad_id: int, eos_id: int, max_new_tokens: int) -> None:
    """Responses are real tokens up to the first EOS (or the token limit), then pad with mask and log-prob 0."""
    for ids, mask, logp, done in zip(r.response_ids.tolist(), r.response_mask.tolist(),
                                     r.behaviour_logp.tolist(), r.finished.tolist()):
        length = ids.index(eos_id) + 1 if eos_id in ids else int(sum(mask))
        assert done == (eos_id in ids)
        assert done or length == max_new_tokens
        assert mask == [1.0] * length + [0.0] * (len(ids) - length)
        assert ids[length:] == [pad_id] * (len(ids) - length)
        assert eos_id not in ids[:length - 1]
        assert all(v == 0.0 for v in logp[length:]) and all(v < 0.0 for v in logp[:length])


@pytest.mark.parametrize("bias, top_p", [(0.0, 1.0), (1.5, 1.0), (1.5, 0.8)])  # 1.5: rows end at mixed lengths
def test_behaviour_logp_matches_training_forward(model, engine, prompts, tokenizer, bias, top_p):
    with eos_bias(model, tokenizer.eos_token_id, bias):
        r = engine.generate(prompts, 3, SamplingParams(temperature=0.7, top_p=top_p, max_new_tokens=16, seed=1))
        with torch.no_grad():
            out = response_logprobs(model, r.input_ids, r.attention_mask, r.prompt_width, temperature=0.7)
    assert len(set(r.prompt_mask.sum(1).tolist())) > 1  # left padding exercised
    check_layout(r, tokenizer.pad_token_id, tokenizer.eos_token_id, 16)
    torch.testing.assert_close(out.logp * r.response_mask, r.behaviour_logp, atol=1e-4, rtol=0)
    assert out.entropy is None and out.label_logp is None


def test_response_logprobs_slices_the_right_positions(model, prompts, tokenizer):
    r = Rollouts.from_token_lists(prompts[:3], [[5, 6, 7], [8, 2], [9]], tokenizer.pad_token_id,
                                  tokenizer.eos_token_id)
    labels = torch.randint(4, len(tokenizer), r.response_ids.shape)
    with torch.no_grad():
        out = response_logprobs(model, r.input_ids, r.attention_mask, r.prompt_width, 1.3, labels=labels,
                                with_entropy=True)
        logits = model(input_ids=r.input_ids, attention_mask=r.attention_mask,
                       position_ids=position_ids_from_mask(r.attention_mask)).logits
    p, width = r.prompt_width, r.response_ids.shape[1]
    full = torch.log_softmax(logits[:, p - 1:p - 1 + width] / 1.3, -1)
    torch.testing.assert_close(out.logp, full.gather(-1, r.response_ids[..., None]).squeeze(-1))
    torch.testing.assert_close(out.label_logp, full.gather(-1, labels[..., None]).squeeze(-1))
    torch.testing.assert_close(out.entropy, -(full.exp() * full).sum(-1))


def test_greedy_matches_generate(model, engine, prompts, tokenizer):
    r = engine.generate(prompts, 1, SamplingParams(temperature=0.0, max_new_tokens=12))
    with torch.no_grad():
        ref = model.generate(input_ids=r.prompt_ids, attention_mask=r.prompt_mask, do_sample=False, max_new_tokens=12,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    assert torch.equal(r.response_ids, ref[:, r.prompt_width:])


def test_seed_reproducible(engine, prompts):
    sampling = SamplingParams(temperature=1.0, max_new_tokens=10, seed=7)
    a, b = engine.generate(prompts, 2, sampling), engine.generate(prompts, 2, sampling)
    c = engine.generate(prompts, 2, SamplingParams(temperature=1.0, max_new_tokens=10, seed=8))
    assert torch.equal(a.response_ids, b.response_ids) and torch.equal(a.behaviour_logp, b.behaviour_logp)
    assert not torch.equal(a.response_ids, c.response_ids)


def test_max_new_tokens_and_eos_suppressed(model, engine, prompts, tokenizer):
    with eos_bias(model, tokenizer.eos_token_id, -1e4):
        r = engine.generate(prompts, 2, SamplingParams(max_new_tokens=5, seed=0))
    assert r.response_ids.shape == (8, 5) and not r.finished.any()
    assert r.response_lengths.tolist() == [5] * 8
    assert engine.generate(prompts, 2, SamplingParams(max_new_tokens=0)).response_ids.shape == (8, 0)


def test_all_rows_stop_early_at_eos(model, engine, prompts, tokenizer):
    with eos_bias(model, tokenizer.eos_token_id, 1e4):
        r = engine.generate(prompts, 2, SamplingParams(max_new_tokens=20, seed=0))
    assert r.response_ids.tolist() == [[tokenizer.eos_token_id]] * 8 and r.finished.all()
    assert r.response_texts(tokenizer) == [""] * 8


def test_repeats_prompt_index_and_mode_restored(model, engine, prompts):
    model.train()
    r = engine.generate(prompts, 3, SamplingParams(max_new_tokens=4, seed=0))
    assert model.training
    model.eval()
    assert r.size == 12 and r.prompt_index.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    for row, i in enumerate(r.prompt_index.tolist()):
        assert r.prompt_ids[row][r.prompt_mask[row].bool()].tolist() == prompts[i]
    assert (r.prompt_ids[:, 0] == 0).any() and r.prompt_mask[:, -1].all()  # left-padded


def test_token_lists_select_concat_round_trip(tokenizer):
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    prompts = [[1, 10], [1, 11, 12, 13], [1, 14, 15]]
    responses = [[20, 21, eos], [22], [23, 24, 25, 26, eos]]
    logps = [[-0.1, -0.2, -0.3], [-0.4], [-0.5, -0.6, -0.7, -0.8, -0.9]]
    r = Rollouts.from_token_lists(prompts, responses, pad, eos, logps, prompt_index=[4, 5, 6])
    assert r.prompt_ids.tolist() == [[pad, pad, 1, 10], [1, 11, 12, 13], [pad, 1, 14, 15]]
    assert r.response_ids[0].tolist() == [20, 21, eos, pad, pad]
    assert r.response_lengths.tolist() == [3, 1, 5] and r.finished.tolist() == [True, False, True]
    assert r.behaviour_logp[1].tolist() == pytest.approx([-0.4, 0, 0, 0, 0])
    assert r.input_ids.shape == (3, 9) and r.attention_mask.sum(1).tolist() == [5, 5, 8]

    parts = [Rollouts.from_token_lists([prompts[i]], [responses[i]], pad, eos, [logps[i]], prompt_index=[4 + i])
             for i in range(3)]
    joined = Rollouts.concat(parts, pad)
    picked = Rollouts.concat([r.select([2, 0]), r.select(torch.tensor([1]))], pad)
    for other in (joined, picked.select([1, 2, 0])):
        for field in ("prompt_ids", "prompt_mask", "response_ids", "response_mask", "behaviour_logp",
                      "prompt_index", "finished"):
            assert torch.equal(getattr(other, field), getattr(r, field)), field
    assert r.response_texts(tokenizer) == [tokenizer.decode(s, skip_special_tokens=True) for s in responses]


def test_token_logprobs_by_hand():
    logits = torch.tensor([[[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]])
    tokens = torch.tensor([[1, 2]])
    expected = torch.log_softmax(logits / 0.5, -1).gather(-1, tokens[..., None]).squeeze(-1)
    torch.testing.assert_close(token_logprobs(logits, tokens, 0.5), expected)
    assert token_logprobs(logits, tokens, 1.0)[0, 0].item() == pytest.approx(
        2.0 - math.log(math.exp(1.0) + math.exp(2.0) + math.exp(0.5)))
    several = torch.tensor([[[1, 0], [2, 2]]])  # k = 2 tokens per position
    torch.testing.assert_close(token_logprobs(logits, several, 0.5),
                               torch.log_softmax(logits / 0.5, -1).gather(-1, several))


def test_entropy_two_token_vocab():
    logits = torch.tensor([[[0.0, math.log(3.0)], [5.0, 5.0]]])
    quarter = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert entropy_from_logits(logits).tolist()[0] == pytest.approx([quarter, math.log(2.0)], abs=1e-6)
    # temperature 2 halves the logits: probabilities 1/(1+sqrt 3) and sqrt 3/(1+sqrt 3)
    p = 1 / (1 + math.sqrt(3.0))
    assert entropy_from_logits(logits, 2.0)[0, 0].item() == pytest.approx(
        -(p * math.log(p) + (1 - p) * math.log(1 - p)), abs=1e-6)


def test_position_ids_ignore_left_padding():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 0]])
    assert position_ids_from_mask(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 3]]


def test_per_prompt_seeds_make_a_prompts_samples_independent_of_the_batch(engine, prompts):
    both = engine.generate(prompts[:2], 3, SamplingParams(temperature=1.0, max_new_tokens=10, seeds=(11, 22)))
    alone = engine.generate(prompts[1:2], 3, SamplingParams(temperature=1.0, max_new_tokens=10, seeds=(22,)))
    width = alone.response_ids.shape[1]
    assert torch.equal(both.response_ids[3:, :width], alone.response_ids)
    torch.testing.assert_close(both.behaviour_logp[3:, :width], alone.behaviour_logp, atol=1e-5, rtol=0)
    other = engine.generate(prompts[1:2], 3, SamplingParams(temperature=1.0, max_new_tokens=10, seeds=(23,)))
    assert not torch.equal(other.response_ids, alone.response_ids)


def test_gumbel_max_sampling_draws_from_the_tempered_distribution():
    """With per-prompt seeds the engine samples by Gumbel-max: frequencies follow softmax(logits / T)."""
    from guidedrl.rollout.hf_engine import PromptNoise, _sample
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.1]])).repeat(4000, 1)
    noise = PromptNoise((5,), 4000, torch.device("cpu"))
    rows, alive = torch.arange(4000), torch.ones(4000, dtype=torch.bool)
    for temperature, expected in ((1.0, [0.6, 0.3, 0.1]), (0.5, [0.36 / 0.46, 0.09 / 0.46, 0.01 / 0.46])):
        tok, logp = _sample(logits, SamplingParams(temperature=temperature), None, noise.draw(rows, alive, 3))
        freq = torch.bincount(tok, minlength=3).float() / 4000
        assert freq.tolist() == pytest.approx(expected, abs=0.03)
        torch.testing.assert_close(logp,
                                   torch.log_softmax(logits / temperature, -1).gather(-1, tok[:, None]).squeeze(1))
    # top-p 0.7 keeps the two most likely tokens (0.6 and 0.3): the third is never drawn
    tok, _ = _sample(logits, SamplingParams(temperature=1.0, top_p=0.7), None, noise.draw(rows, alive, 3))
    assert not (tok == 2).any() and (tok == 1).float().mean() == pytest.approx(1 / 3, abs=0.03)


@pytest.mark.parametrize("sampling, bias", [
    (SamplingParams(temperature=0.0, max_new_tokens=20), -10.0),
    (SamplingParams(temperature=1.0, max_new_tokens=20, seeds=(1, 2, 3, 4)), 0.8),
    (SamplingParams(temperature=0.7, top_p=0.8, max_new_tokens=20, seed=5), 0.8)])
def test_the_preallocated_cache_decodes_what_the_growing_cache_does(model, prompts, tokenizer, sampling, bias):
    """The same tokens, masks and log-probs as transformers' growing DynamicCache, greedy to the full length and
    sampled with rows ending at mixed lengths (finished rows are dropped from both caches mid-call)."""
    with eos_bias(model, tokenizer.eos_token_id, bias):
        runs = [HFEngine(model, tokenizer.pad_token_id, tokenizer.eos_token_id, preallocated_cache=flag).generate(
            prompts, 3, sampling) for flag in (True, False)]
    new, old = runs
    lengths = set(new.response_lengths.tolist())
    assert lengths == {20} if sampling.temperature == 0 else len(lengths) > 2
    for field in ("response_ids", "response_mask", "finished", "prompt_ids"):
        assert torch.equal(getattr(new, field), getattr(old, field)), field
    torch.testing.assert_close(new.behaviour_logp, old.behaviour_logp, atol=1e-6, rtol=0)
