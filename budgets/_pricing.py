"""Per-model prices and the cost of a call.

cost = (prompt - cached) x input + cached x cached_input + completion x output, per million
tokens. Reasoning tokens are part of the completion and billed as output, never on top.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stratagem.budgets._usage import Usage
from stratagem.errors import PricingError

__all__ = ["BUILTIN_PRICES", "PRICES_AS_OF", "ModelPrice", "Pricing"]

# A dated snapshot of a model: gpt-4o-2024-08-06, gpt-4-0613, gpt-4o-mini-latest.
_SNAPSHOT = re.compile(r"(.+?)-(?:\d{4}-\d{2}-\d{2}|\d{4}|latest)")

PRICES_AS_OF = "2025-08"
"""When the built-in table was last checked against the providers' price pages."""


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """Prices of one model in US dollars per million tokens.

    Attributes:
        input: Price of an uncached prompt token.
        output: Price of a completion token (reasoning tokens included).
        cached_input: Price of a prompt token served from the cache; ``None`` means the
            model has no cache discount (cached tokens cost ``input``).
    """

    input: float
    output: float
    cached_input: float | None = None

    def __post_init__(self) -> None:
        for name in ("input", "output", "cached_input"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise PricingError(f"price {name} must be >= 0 dollars per million tokens")

    def cost(self, usage: Usage) -> float:
        """Dollar cost of ``usage``; unknown cached tokens are billed as uncached input."""
        cached = usage.cached_tokens or 0
        cached_price = self.input if self.cached_input is None else self.cached_input
        dollars = (
            (usage.prompt_tokens - cached) * self.input
            + cached * cached_price
            + usage.completion_tokens * self.output
        )
        return dollars / 1_000_000


# OpenAI list prices (USD per 1M tokens: input, output, cached input). Local and simulated
# models are free. Override or extend with a TOML file: Pricing.from_toml(path).
BUILTIN_PRICES: Mapping[str, ModelPrice] = {
    "gpt-5": ModelPrice(1.25, 10.00, 0.125),
    "gpt-5-mini": ModelPrice(0.25, 2.00, 0.025),
    "gpt-5-nano": ModelPrice(0.05, 0.40, 0.005),
    "gpt-4.1": ModelPrice(2.00, 8.00, 0.50),
    "gpt-4.1-mini": ModelPrice(0.40, 1.60, 0.10),
    "gpt-4.1-nano": ModelPrice(0.10, 0.40, 0.025),
    "gpt-4o": ModelPrice(2.50, 10.00, 1.25),
    "gpt-4o-mini": ModelPrice(0.15, 0.60, 0.075),
    "o1": ModelPrice(15.00, 60.00, 7.50),
    "o3": ModelPrice(2.00, 8.00, 0.50),
    "o3-mini": ModelPrice(1.10, 4.40, 0.55),
    "o4-mini": ModelPrice(1.10, 4.40, 0.275),
    "gpt-4-turbo": ModelPrice(10.00, 30.00),
    "gpt-3.5-turbo": ModelPrice(0.50, 1.50),
    "smollm2-135m-instruct": ModelPrice(0.0, 0.0, 0.0),
    "simulated": ModelPrice(0.0, 0.0, 0.0),
    "scripted": ModelPrice(0.0, 0.0, 0.0),
}


class Pricing:
    """A price table: exact model names first, then a dated snapshot of a known model.

    ``gpt-4o-2024-08-06`` and ``gpt-4-0613`` are priced as their base model, but
    ``o3-pro`` is *not* priced as ``o3``: only a date (or ``-latest``) may follow a known name.
    A provider prefix (``openai/gpt-4o``) is ignored. An unknown model has no price:
    :meth:`cost` returns ``None``, never 0.
    """

    def __init__(self, prices: Mapping[str, ModelPrice] | None = None) -> None:
        """Create a table from ``prices`` (the built-in table when ``None``)."""
        table = BUILTIN_PRICES if prices is None else prices
        self._prices = {name.lower(): price for name, price in table.items()}

    @classmethod
    def default(cls) -> Pricing:
        """The built-in table (see ``PRICES_AS_OF``)."""
        return cls()

    @classmethod
    def from_toml(cls, path: str | Path, *, include_builtin: bool = True) -> Pricing:
        """Load prices from a TOML file, on top of the built-in table unless told otherwise.

        The file looks like::

            [models."gpt-4o"]
            input = 2.50          # USD per million prompt tokens
            cached_input = 1.25   # optional
            output = 10.00

        Raises:
            PricingError: If the file is missing, not valid TOML, or a field is wrong; the
                message names the field.
        """
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise PricingError(f"price file {path} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise PricingError(f"price file {path} is not valid TOML: {exc}") from exc
        return cls.from_mapping(data, source=str(path), include_builtin=include_builtin)

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, Any], *, source: str = "prices", include_builtin: bool = True
    ) -> Pricing:
        """Build a table from ``{"models": {name: {"input": .., "output": .., ...}}}``.

        Raises:
            PricingError: If a field is missing, unknown or not a non-negative number.
        """
        models = data.get("models")
        if not isinstance(models, Mapping):
            raise PricingError(f"{source}: expected a [models.\"NAME\"] table per model")
        prices = dict(BUILTIN_PRICES) if include_builtin else {}
        for name, spec in models.items():
            where = f"{source}: models.{name!r}"
            if not isinstance(spec, Mapping):
                raise PricingError(f"{where} must be a table with input and output prices")
            unknown = set(spec) - {"input", "output", "cached_input"}
            if unknown:
                raise PricingError(
                    f"{where} has unknown field(s) {sorted(unknown)}: "
                    "use input, output and cached_input"
                )
            values: dict[str, float | None] = {}
            for field in ("input", "output", "cached_input"):
                raw = spec.get(field)
                if raw is None:
                    if field != "cached_input":
                        raise PricingError(f"{where}.{field} is missing (USD per 1M tokens)")
                    values[field] = None
                    continue
                if isinstance(raw, bool) or not isinstance(raw, int | float) or raw < 0:
                    raise PricingError(
                        f"{where}.{field} must be a non-negative number of USD per 1M tokens, "
                        f"got {raw!r}"
                    )
                values[field] = float(raw)
            inp, out = values["input"], values["output"]
            assert inp is not None and out is not None  # checked above
            prices[str(name)] = ModelPrice(inp, out, values["cached_input"])
        return cls(prices)

    def price(self, model: str) -> ModelPrice | None:
        """The price of ``model``, by exact name or longest known prefix; ``None`` if unknown."""
        name = model.lower().rsplit("/", 1)[-1]
        exact = self._prices.get(name)
        if exact is not None:
            return exact
        match = _SNAPSHOT.fullmatch(name)
        return None if match is None else self._prices.get(match.group(1))

    def cost(self, model: str, usage: Usage) -> float | None:
        """Dollar cost of ``usage`` on ``model``; ``None`` when the price is unknown."""
        price = self.price(model)
        return None if price is None else price.cost(usage)

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str) and self.price(model) is not None

    def models(self) -> list[str]:
        """The model names (and prefixes) this table prices."""
        return sorted(self._prices)
