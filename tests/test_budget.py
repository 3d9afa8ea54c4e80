"""The token budget and the chunked log-prob path: where rows are cut, and that chunking changes nothing but memory.

Every expected value is a hand count or a direct forward of the same model (full logits, log-softmax), so
nothing depends on what a model learned.
"""

from __future__ import annotations

import pytest
import torch

from guidedrl.algorithms.logprobs import predictions
from guidedrl.rollout.budget import ForwardBudget, budget_cuts
from guidedrl.rollout.engine import Rollouts, SamplingParams
from guidedrl.rollout.forward import position_ids_from_mask, response_logprobs, response_predictions
from guidedrl.rollout.hf_engine import HFEngine


@pytest.fixture(scope="module")
def rollouts(tokenizer) -> Rollouts:
    prompts = tokenizer(["1+1=", "12*(3+4)=", "7", "x^2-5x+6=0;x="])["input_ids"]
    responses = [[5, 6, 7, 8, 2], [9, 2], [10, 11, 12, 13, 14, 15, 2], [16]]
    return Rollouts.from_token_lists(prompts, responses, tokenizer.pad_token_id, tokenizer.eos_token_id)


def test_cuts_hold_rows_while_their_padded_size_fits() -> None:
    # padded size of a run = rows × (longest prompt + longest response among them)
    prompts, responses = [2, 2, 3, 1, 5], [3, 4, 4, 1, 20]
    assert budget_cuts(prompts, responses, tokens=12, rows=8) == [[0, 1], [2], [3], [4]]
    # [0,1]: 2×(2+4)=12 fits; +2: 3×(3+4)=21 > 12; [2]: 7, +3: 2×(3+4)=14 > 12; [3]: 2, +4: 2×25 > 12
    assert budget_cuts(prompts, responses, tokens=None, rows=2) == [[0, 1], [2, 3], [4]]
    assert budget_cuts(prompts, responses, tokens=14, rows=8) == [[0, 1], [2, 3], [4]]  # 2×7=14; a row over: alone
    assert budget_cuts([], [], tokens=10, rows=3) == []


def test_forward_budget_sorts_rows_by_length_and_places_values_back(rollouts: Rollouts) -> None:
    budget = ForwardBudget(tokens=30, rows=8)
    cuts = budget.cuts(rollouts)
    lengths = (rollouts.prompt_mask.sum(1) + rollouts.response_mask.sum(1)).tolist()
    assert sorted(int(i) for c in cuts for i in c) == [0, 1, 2, 3]
    assert [lengths[int(c[0])] for c in cuts] == sorted(lengths[int(c[0])] for c in cuts)  # shortest first
    for c in cuts:  # each cut within the budget, or a single row
        part = rollouts.select(c).trimmed()
        assert len(c) == 1 or part.size * part.input_ids.shape[1] <= 30
    (ids,) = budget.per_token(rollouts, lambda part, rows: part.response_ids.float())
    torch.testing.assert_close(ids, (rollouts.response_ids * rollouts.response_mask).float())


@pytest.mark.parametrize("chunk", [1, 3, None])
def test_chunked_logprobs_and_their_gradient_equal_the_full_log_softmax(model, rollouts: Rollouts, chunk) -> None:
    r = rollouts
    labels = torch.randint(4, 30, r.response_ids.shape, generator=torch.Generator().manual_seed(0))
    topk = torch.randint(4, 30, (*r.response_ids.shape, 3), generator=torch.Generator().manual_seed(1))

    def loss_of(out_logp, out_entropy, out_label, out_topk) -> torch.Tensor:
        return out_logp.sum() + 0.5 * out_entropy.sum() - out_label.sum() + 0.1 * out_topk.sum()

    model.zero_grad()
    out = response_logprobs(model, r.input_ids, r.attention_mask, r.prompt_width, 0.7, labels=labels,
                            with_entropy=True, topk_ids=topk, logits_chunk=chunk)
    loss_of(*out).backward()
    grad = torch.cat([p.grad.flatten() for p in model.parameters()])
    model.zero_grad()
    logits = model(input_ids=r.input_ids, attention_mask=r.attention_mask,
                   position_ids=position_ids_from_mask(r.attention_mask)).logits
    p, width = r.prompt_width, r.response_ids.shape[1]
    full = torch.log_softmax(logits[:, p - 1:p - 1 + width] / 0.7, -1)
    expected = (full.gather(-1, r.response_ids[..., None]).squeeze(-1), -(full.exp() * full).sum(-1),
                full.gather(-1, labels[..., None]).squeeze(-1), full.gather(-1, topk))
    loss_of(*expected).backward()
    direct = torch.cat([p.grad.flatten() for p in model.parameters()])
    model.zero_grad()
    for got, want in zip(out, expected):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad, direct, atol=1e-5, rtol=1e-4)


def test_a_detached_entropy_is_a_metric_with_no_gradient(model, rollouts: Rollouts) -> None:
    r = rollouts
    out = response_logprobs(model, r.input_ids, r.attention_mask, r.prompt_width, with_entropy=True,
                            logits_chunk=4, entropy_grad=False)
    assert out.logp.requires_grad and not out.entropy.requires_grad


@pytest.mark.parametrize("chunk", [2, None])
def test_teacher_predictions_in_chunks_equal_a_direct_forward(model, rollouts: Rollouts, chunk) -> None:
    r = rollouts
    with torch.no_grad():
        got = response_predictions(model, r.input_ids, r.attention_mask, r.prompt_width, 1.3, top_k=4,
                                   logits_chunk=chunk)
        logits = model(input_ids=r.input_ids, attention_mask=r.attention_mask,
                       position_ids=position_ids_from_mask(r.attention_mask)).logits
    p, width = r.prompt_width, r.response_ids.shape[1]
    full = torch.log_softmax(logits[:, p - 1:p - 1 + width] / 1.3, -1)
    torch.testing.assert_close(got.logp, full.gather(-1, r.response_ids[..., None]).squeeze(-1))
    assert torch.equal(got.label, full.argmax(-1))
    top = full.topk(4, -1)
    assert torch.equal(got.topk_ids, top.indices)
    torch.testing.assert_close(got.topk_logp, top.values)


def test_predictions_by_hand() -> None:
    logits = torch.tensor([[1.0, 3.0, 2.0], [0.0, 0.0, 5.0]])
    pred = predictions(logits, torch.tensor([0, 2]), temperature=1.0, top_k=2)
    lse = torch.logsumexp(logits, -1)
    assert pred.label.tolist() == [1, 2] and pred.topk_ids.tolist() == [[1, 2], [2, 0]]
    torch.testing.assert_close(pred.logp, torch.tensor([1.0, 5.0]) - lse)
    torch.testing.assert_close(pred.topk_logp, torch.tensor([[3.0, 2.0], [5.0, 0.0]]) - lse[:, None])


def test_generation_in_kv_budget_chunks_samples_the_same_tokens(model, tokenizer) -> None:
    """Per-prompt seeds: a prompt's samples do not depend on which other prompts share its chunk."""
    prompts = tokenizer(["1+1=", "12*(3+4)=", "7", "x^2-5x+6=0;x=", "9*9="])["input_ids"]
    sampling = SamplingParams(temperature=1.0, max_new_tokens=10, seeds=(3, 1, 4, 1, 5))
    whole = HFEngine(model, tokenizer.pad_token_id, tokenizer.eos_token_id).generate(prompts, 3, sampling)
    chunked = HFEngine(model, tokenizer.pad_token_id, tokenizer.eos_token_id, max_tokens=3 * 25)
    calls: list[int] = []
    decode = chunked._generate
    chunked._generate = lambda p, n, s: calls.append(len(p)) or decode(p, n, s)  # count the chunks
    parts = chunked.generate(prompts, 3, sampling)
    assert len(calls) > 1 and sum(calls) == len(prompts)
    for field in ("response_ids", "response_mask", "prompt_index", "finished"):
        assert torch.equal(getattr(parts, field), getattr(whole, field)), field
    assert torch.equal(parts.prompt_ids[parts.prompt_mask.bool()], whole.prompt_ids[whole.prompt_mask.bool()])
    torch.testing.assert_close(parts.behaviour_logp, whole.behaviour_logp, atol=1e-5, rtol=0)


def test_generation_in_kv_budget_chunks_with_one_call_seed_is_reproducible(model, tokenizer) -> None:
    """A call seeded as a whole (``seed``, as evaluation passes beside its per-prompt seeds) seeds each chunk from
    it: the chunked call runs and draws the same tokens again."""
    prompts = tokenizer(["1+1=", "12*(3+4)=", "7", "x^2-5x+6=0;x=", "9*9="])["input_ids"]
    chunked = HFEngine(model, tokenizer.pad_token_id, tokenizer.eos_token_id, max_tokens=3 * 25)
    for sampling in (SamplingParams(temperature=1.0, max_new_tokens=10, seed=7),
                     SamplingParams(temperature=1.0, max_new_tokens=10, seed=7, seeds=(3, 1, 4, 1, 5))):
        first, again = chunked.generate(prompts, 3, sampling), chunked.generate(prompts, 3, sampling)
        assert first.size == 15 and torch.equal(first.response_ids, again.response_ids)
