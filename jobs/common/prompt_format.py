"""The base-model prompt format: the one place that defines how a conversation turn is written.

Used by mix (training rows), train (tokenization) and eval (generation), so the student is always
prompted exactly as it was trained. Only plain text that every base tokenizer already has:
adding special tokens under LoRA would force ``modules_to_save``, which vLLM refuses.

    User: How do tides work?

    Assistant: The Moon's gravity ...<eos>
"""

from __future__ import annotations

from collections.abc import Sequence

USER = "User:"
ASSISTANT = "Assistant:"
#: Generation stops where the model starts a new turn (a base model happily continues the transcript).
STOP_STRINGS: tuple[str, ...] = ("\nUser:", "\n\nUser:", "\nAssistant:", "\n\nAssistant:")


def format_prompt(user: str) -> str:
    """The prompt text for one user turn; the completion follows it directly."""
    return f"{USER} {user.strip()}\n\n{ASSISTANT}"


def format_completion(response: str) -> str:
    """The completion text (starts with a space, no EOS: the trainer appends the tokenizer's EOS)."""
    return " " + response.strip()


def cut_at_stop(text: str, stop: Sequence[str] = STOP_STRINGS) -> tuple[str, bool]:
    """Cut generated text at the first stop string; returns (text, whether a stop string was hit)."""
    cut = len(text)
    for s in stop:
        i = text.find(s)
        if i != -1:
            cut = min(cut, i)
    return text[:cut].strip(), cut < len(text)
