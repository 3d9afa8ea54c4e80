"""Prompt templates, chosen by name: how a question's text becomes the prompt a model is asked.

The wordings are those of the papers' evaluation script (LUFFY's ``eval_scripts/generate_vllm.py``, which
AMPO reuses), kept verbatim because a reported number depends on them:

* ``plain``: the text as it is (the embedded world's prompts; the script's ``no``).
* ``qwen_math``: Qwen2.5-Math's system prompt ("Please reason step by step, and put your final answer within
  \\boxed{}.") and the question as the user's message, rendered by the model's chat template (the script's
  ``qwen``, which writes Qwen's template out by hand; a Qwen tokenizer renders the same text).
* ``r1_zero``: DeepSeek-R1-Zero's one-string prompt, thinking in ``<think>`` and answering in ``<answer>``
  with a boxed answer (the script's ``prime``), for base models trained with it.
* ``r1_chat``: the question alone as the user's message of the model's chat template (the script's ``own``
  once the system message is removed), for R1-style chat models that think before a boxed answer.

A template is a function of the question's text returning the prompt: a string, or a list of chat messages.
"""

from __future__ import annotations

from guidedrl.data import Prompt
from guidedrl.registry import TEMPLATES

QWEN_MATH_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
R1_ZERO = ("A conversation between User and Assistant. The user asks a question, and the Assistant solves it. The "
           "assistant first thinks about the reasoning process in the mind and then provides the user with the "
           "answer. The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> "
           "tags, respectively, i.e., <think> reasoning process here </think> <answer> answer here </answer>. "
           "User: {question}\n\nPresent the answer in LaTex format: \\boxed{{Your answer}}. Assistant:")


@TEMPLATES.register("plain")
def plain(question: str) -> Prompt:
    """The question as it is."""
    return question


@TEMPLATES.register("qwen_math")
def qwen_math(question: str) -> Prompt:
    """Qwen2.5-Math's step-by-step system prompt, then the question."""
    return [{"role": "system", "content": QWEN_MATH_SYSTEM}, {"role": "user", "content": question}]


@TEMPLATES.register("r1_zero")
def r1_zero(question: str) -> Prompt:
    """The R1-Zero conversation in one string, with the boxed-answer request."""
    return R1_ZERO.format(question=question)


@TEMPLATES.register("r1_chat")
def r1_chat(question: str) -> Prompt:
    """The question as the one user message."""
    return [{"role": "user", "content": question}]
