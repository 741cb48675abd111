"""How much more a server bills than tiktoken counts, learned per endpoint and model.

tiktoken is not a local model's tokenizer, and servers add chat templates and default system
prompts (SmolLM2's add about 30 tokens to every prompt). A tiktoken estimate of a reply that
came without usage, or of the prompt of a reply that was lost, would then undercount. The
first replies *with* usage from an endpoint say by how much: the largest ratio of billed to
counted tokens seen (at least 1, at most :data:`MAX_SCALE`), for prompts and completions
apart. Later estimates and bounds for that endpoint are scaled by it, so they do not
undercount; reservations too, so a budget is not overrun by the difference.

One table per process (:data:`CALIBRATION`), shared by :class:`~stratagem.agents.ModelClient`
and the LangChain adapters: it is a property of the server's tokenizer and template, not of
whichever client asked.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

from stratagem.budgets._usage import Usage

__all__ = ["CALIBRATION", "MAX_SCALE", "TokenCalibration", "TokenScale"]

MAX_SCALE = 8.0
"""The largest ratio believed (beyond it, a reply's usage is more likely wrong)."""


@dataclass(frozen=True, slots=True)
class TokenScale:
    """Billed tokens per tiktoken token on one endpoint, for prompts and for completions."""

    prompt: float = 1.0
    completion: float = 1.0


class TokenCalibration:
    """Per ``(endpoint, model)``: how much more the server bills than tiktoken counts.

    Args:
        samples: Replies with provider usage learned from per key (each costs a tiktoken
            count of its prompt and text); later ones are not looked at.
        min_text_tokens: Shorter replies say little about the completion ratio and are not
            used for it.

    Example:
        >>> cal = TokenCalibration()
        >>> cal.observe(("http://h/v1", "m"), counted_prompt=10, counted_text=20,
        ...             usage=Usage(13, 22, None, None, "provider"))
        >>> cal.prompt(("http://h/v1", "m"), 100)
        130
    """

    def __init__(self, *, samples: int = 16, min_text_tokens: int = 8) -> None:
        self.samples = samples
        self.min_text_tokens = min_text_tokens
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], int] = {}
        self._scales: dict[tuple[str, str], TokenScale] = {}

    def wants(self, key: tuple[str, str]) -> bool:
        """Whether a reply with usage from ``key`` would still be learned from."""
        return self._seen.get(key, 0) < self.samples

    def observe(self, key: tuple[str, str], *, counted_prompt: int, counted_text: int,
                usage: Usage) -> None:
        """Learn from one reply with the provider's usage (others are ignored)."""
        if usage.source != "provider":
            return
        with self._lock:
            self._seen[key] = self._seen.get(key, 0) + 1
            old = self._scales.get(key, TokenScale())
            prompt = old.prompt
            if counted_prompt:
                prompt = max(prompt, usage.prompt_tokens / counted_prompt)
            completion = old.completion
            if counted_text >= self.min_text_tokens:
                completion = max(completion, usage.completion_tokens / counted_text)
            self._scales[key] = TokenScale(min(prompt, MAX_SCALE), min(completion, MAX_SCALE))

    def scale(self, key: tuple[str, str]) -> TokenScale | None:
        """What was learned for ``key`` (``None``: nothing yet)."""
        return self._scales.get(key)

    def prompt(self, key: tuple[str, str], counted: int) -> int:
        """A tiktoken prompt count scaled to what ``key`` bills (never down)."""
        scale = self._scales.get(key)
        return counted if scale is None else math.ceil(counted * scale.prompt)

    def estimate(self, key: tuple[str, str], usage: Usage) -> Usage:
        """A tiktoken estimate (or bound) scaled to what ``key`` bills; its source kept."""
        scale = self._scales.get(key)
        if scale is None or usage.source == "provider":
            return usage
        return Usage(math.ceil(usage.prompt_tokens * scale.prompt),
                     math.ceil(usage.completion_tokens * scale.completion),
                     usage.cached_tokens, usage.reasoning_tokens, usage.source)


CALIBRATION = TokenCalibration()
"""The process's table, shared by every client and adapter."""
