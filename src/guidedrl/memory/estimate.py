"""What one process of a run holds at its peak, estimated from the model's config before anything is loaded.

Parts (bytes per process): the policy's weights, gradients and AdamW state by precision and sharding; frozen
models (a local teacher, the k3 KL's reference, online teachers) and PPO's critic; vLLM's share of the device;
and the larger of two phases — the update (activations of one forward at the token budget, with or without
gradient checkpointing, plus the logits of one chunk) and generation (the built-in engine's KV cache at its
budget). Activations are counted per token and layer for a Llama/Qwen decoder (RMSNorm, rotary attention with
SDPA — no T×T scores — and a gated MLP). vLLM's share counts in the generation phase when it sleeps during the
update (its sleep mode, on by default on a GPU), else always. The figure is an estimate, checked against a
measured peak on the CPU (tests/test_memory.py) and meant to say which setting to change before a GPU runs out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from guidedrl.config import TrainConfig

GIB = 1024 ** 3
# elements saved per token and layer, in units of the hidden size H, the MLP width I and the K/V width: the
# attention block keeps ~9H + 3KV (norm input and fp32 copy, q/k/v, rotated q/k, repeated k/v, output), the
# MLP ~4H + 4I (norm, gate, up, activation, product)
ACT_H, ACT_I, ACT_KV = 13, 4, 3
LOGIT_COPIES = 6  # vocabulary-wide tensors per chunk position: logits, fp32 scaled, exp, product, their gradients
FRAMEWORK_GIB = 1.0  # CUDA context, allocator fragmentation and small buffers, on a GPU


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a causal LM that memory depends on."""

    params: int
    layers: int
    hidden: int
    intermediate: int
    kv_width: int  # key/value heads × head size
    vocab: int
    context: int | None

    @classmethod
    def of(cls, config: object, params: int | None = None) -> ModelShape:
        """From a transformers config (its parameter count from a meta-device build unless given)."""
        if params is None:
            import torch
            from transformers import AutoModelForCausalLM
            with torch.device("meta"):
                params = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        return cls(params, config.num_hidden_layers, config.hidden_size,
                   getattr(config, "intermediate_size", 4 * config.hidden_size), kv_heads * head_dim,
                   config.vocab_size, getattr(config, "max_position_embeddings", None))


@dataclass(frozen=True)
class Part:
    """One line of the estimate: what, how many bytes, the setting that changes it, and when it is held:
    always (``static``), during the update or during generation (the peak holds the larger of those two)."""

    name: str
    bytes: float
    setting: str
    phase: str = "static"


@dataclass(frozen=True)
class MemoryEstimate:
    """The parts of one process's peak and the device memory they must fit (None: unknown, no check)."""

    parts: tuple[Part, ...]
    limit_gib: float | None
    note: str = ""

    def phase(self, name: str) -> float:
        return sum(p.bytes for p in self.parts if p.phase == name)

    @property
    def total(self) -> float:
        return self.phase("static") + max(self.phase("update"), self.phase("generation"))

    @property
    def fits(self) -> bool:
        return self.limit_gib is None or self.total <= self.limit_gib * GIB

    def part(self, name: str) -> float:
        return sum(p.bytes for p in self.parts if p.name == name)

    def largest(self) -> Part:
        """The part that counts most toward the peak (a part of the smaller phase counts for nothing)."""
        held = "update" if self.phase("update") >= self.phase("generation") else "generation"
        return max((p for p in self.parts if p.phase in ("static", held) and p.setting != "fixed"),
                   key=lambda p: p.bytes)

    def lines(self) -> list[str]:
        """The table as text lines: one per part, then the total against the limit."""
        phases = {"static": "", "update": " [update]", "generation": " [generation]"}
        out = [f"  {p.name + phases[p.phase]:<44} {p.bytes / GIB:>8.2f} GiB  {p.setting}"
               for p in self.parts if p.bytes > 0]
        limit = "(no device limit known)" if self.limit_gib is None else f"of {self.limit_gib:g} GiB"
        out.append(f"  {'peak per process':<44} {self.total / GIB:>8.2f} GiB  {limit}")
        return out + ([f"  {self.note}"] if self.note else [])


def activation_bytes_per_token(shape: ModelShape, dtype_bytes: int, checkpointing: bool) -> float:
    """Activations a training forward keeps per token for its backward: every layer's, or with gradient
    checkpointing each layer's input plus one layer recomputed at a time; plus one layer's gradients."""
    per_layer = (ACT_H * shape.hidden + ACT_I * shape.intermediate + ACT_KV * shape.kv_width) * dtype_bytes
    if checkpointing:
        return shape.layers * shape.hidden * dtype_bytes + 2 * per_layer
    return (shape.layers + 1) * per_layer


def estimate_memory(cfg: TrainConfig, policy: ModelShape, frozen: tuple[ModelShape, ...] = (),
                    critic: ModelShape | None = None, trainable: int | None = None,
                    gpu_memory_gib: float | None = None, processes: int | None = None) -> MemoryEstimate:
    """The per-process estimate for ``cfg``: ``frozen`` are the frozen models it loads (teacher, reference,
    online teachers), ``trainable`` the trained parameters (default: all; fewer with LoRA), ``processes`` and
    ``gpu_memory_gib`` override the config's ``memory`` section (a launched run, a device's real size)."""
    m, r = cfg.memory, cfg.rollout
    n = processes or m.processes
    weight_bytes = 2 if cfg.precision == "bf16-pure" else 4
    act_bytes = 4 if cfg.precision == "fp32" else 2
    trained = policy.params if trainable is None else trainable
    shard_state = n if m.sharding in ("optimizer", "full") else 1
    shard_weights = n if m.sharding == "full" else 1
    longest = (r.max_prompt_length or 0) + r.max_new_tokens
    tokens = max(m.tokens_per_forward or cfg.optim.micro_batch_size * longest, longest)  # a long row: alone
    chunk = min(m.logits_chunk or tokens, tokens)
    per_token = activation_bytes_per_token(policy, act_bytes, cfg.gradient_checkpointing)
    other = activation_bytes_per_token(policy, act_bytes, not cfg.gradient_checkpointing)
    limit = gpu_memory_gib if gpu_memory_gib is not None else m.gpu_memory_gib
    # vLLM's sleep mode (by default on a GPU, i.e. when a device's memory is what the estimate is against)
    vllm_sleeps = r.vllm.sleep_mode if r.vllm.sleep_mode is not None else limit is not None
    parts = [
        Part("policy weights", policy.params * weight_bytes / shard_weights, "precision, memory.sharding"),
        Part("AdamW state (2 moments, fp32)", trained * (8 if weight_bytes == 4 else 10) / shard_state,
             "memory.sharding, lora"),  # bf16 weights: and each update's bf16 rounding error (CompensatedAdamW)
        Part("frozen models (teacher, reference)", sum(f.params for f in frozen) * (4 if act_bytes == 4 else 2),
             "teacher_signal, regularizers.kl"),
        Part("critic (weights, gradients, AdamW)", 0 if critic is None else critic.params * (2 * weight_bytes + 8),
             "algorithm.advantage"),
        Part("vLLM (weights + KV cache)", (limit or 0) * GIB * r.vllm.gpu_memory_utilization if r.engine == "vllm"
             else 0, "rollout.vllm.gpu_memory_utilization",
             "generation" if vllm_sleeps else "static"),  # asleep during the update: its memory is freed
        Part("gradients", trained * weight_bytes / shard_state, "memory.sharding, lora", "update"),
        Part("activations at the token budget", per_token * tokens,
             f"{tokens} tokens: memory.tokens_per_forward, gradient_checkpointing", "update"),
        Part("logits of one chunk", chunk * policy.vocab * 4 * LOGIT_COPIES, f"{chunk} positions: memory.logits_chunk",
             "update"),
        Part("whole weights gathered to generate", 0 if r.engine == "vllm" else  # FSDP's full sharding
             policy.params * weight_bytes * (1 - 1 / shard_weights), "memory.sharding", "generation"),
        Part("KV cache of the built-in engine", 0 if r.engine == "vllm" else
             (r.kv_cache_tokens or tokens) * 2 * policy.layers * policy.kv_width * act_bytes,
             "rollout.kv_cache_tokens", "generation"),
        Part("framework reserve", FRAMEWORK_GIB * GIB if limit is not None else 0, "fixed"),
    ]
    note = (f"activations with gradient_checkpointing={not cfg.gradient_checkpointing}: "
            f"{other * tokens / GIB:.2f} GiB")
    return MemoryEstimate(tuple(parts), limit, note)
