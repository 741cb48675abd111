"""Token usage of one call, normalised across providers."""

from __future__ import annotations

from dataclasses import dataclass

from stratagem._types import UsageSource

__all__ = ["Usage"]


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage of one HTTP-level call.

    ``cached_tokens`` is a subset of ``prompt_tokens`` and ``reasoning_tokens`` a subset of
    ``completion_tokens``: never add them on top. ``None`` means the provider did not say
    (unknown), which is not the same as zero.

    Attributes:
        prompt_tokens: Input tokens billed, cached ones included.
        completion_tokens: Output tokens billed, reasoning ones included.
        cached_tokens: How many of the prompt tokens were served from the provider's cache.
        reasoning_tokens: How many of the completion tokens were hidden reasoning.
        source: ``"provider"`` when the server reported it, ``"estimate"`` when tiktoken did,
            ``"none"`` when nobody did (an attempt that failed without usage or output).
    """

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    source: UsageSource = "provider"

    def __post_init__(self) -> None:
        for name in ("prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if self.cached_tokens is not None and self.cached_tokens > self.prompt_tokens:
            raise ValueError(
                f"cached_tokens ({self.cached_tokens}) is a subset of prompt_tokens "
                f"({self.prompt_tokens}) and cannot exceed it"
            )
        if self.reasoning_tokens is not None and self.reasoning_tokens > self.completion_tokens:
            raise ValueError(
                f"reasoning_tokens ({self.reasoning_tokens}) is a subset of completion_tokens "
                f"({self.completion_tokens}) and cannot exceed it"
            )

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens (cached and reasoning are already inside them)."""
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def zero(cls) -> Usage:
        """Usage of an attempt that returned nothing (it is still recorded, at zero tokens).

        Its source is ``"none"``: no server reported these zeros, and nothing was estimated.
        """
        return cls(0, 0, None, None, "none")
