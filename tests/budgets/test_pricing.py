from __future__ import annotations

from pathlib import Path

import pytest

from stratagem.budgets import ModelPrice, Pricing, Usage
from stratagem.errors import PricingError


def test_cost_splits_cached_input_and_never_adds_reasoning() -> None:
    p = Pricing.default()
    usage = Usage(prompt_tokens=1_000_000, completion_tokens=1_000_000,
                  cached_tokens=400_000, reasoning_tokens=700_000)
    # gpt-4o: 600k x $2.50 + 400k x $1.25 + 1M x $10 (reasoning inside completion)
    assert p.cost("gpt-4o", usage) == pytest.approx(1.5 + 0.5 + 10.0)


def test_unknown_cached_is_billed_as_uncached_and_no_discount_model() -> None:
    price = ModelPrice(input=2.0, output=4.0)
    assert price.cost(Usage(1000, 0, cached_tokens=500)) == pytest.approx(0.002)
    assert ModelPrice(2.0, 4.0, 1.0).cost(Usage(1000, 0)) == pytest.approx(0.002)


def test_lookup_by_snapshot_and_provider_prefix_but_not_by_guess() -> None:
    p = Pricing.default()
    assert p.price("gpt-4o-2024-08-06") == p.price("gpt-4o")
    assert p.price("openai/gpt-4o-mini") == p.price("gpt-4o-mini")
    assert p.price("gpt-4o-mini") != p.price("gpt-4o")
    assert p.price("o3-pro") is None  # not priced as o3
    assert p.cost("llama-3-70b", Usage(10, 10)) is None  # unknown, not 0
    assert "gpt-5" in p and "nope" not in p
    assert p.cost("smollm2-135m-instruct", Usage(100, 100)) == 0.0


def test_toml_overrides_and_extends_builtin(tmp_path: Path) -> None:
    f = tmp_path / "prices.toml"
    f.write_text('[models."gpt-4o"]\ninput = 1.0\noutput = 2.0\n'
                 '[models."my-vllm-model"]\ninput = 0.1\ncached_input = 0.05\noutput = 0.2\n')
    p = Pricing.from_toml(f)
    assert p.price("gpt-4o") == ModelPrice(1.0, 2.0, None)
    assert p.price("my-vllm-model") == ModelPrice(0.1, 0.2, 0.05)
    assert p.price("gpt-5") is not None
    assert Pricing.from_toml(f, include_builtin=False).price("gpt-5") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[models.x]\ninput = 1\n", "models.'x'.output is missing"),
        ("[models.x]\ninput = -1\noutput = 1\n", "non-negative"),
        ("[models.x]\ninput = 'cheap'\noutput = 1\n", "non-negative"),
        ("[models.x]\ninput = 1\noutput = 1\ncolour = 2\n", "unknown field"),
        ("models = 3\n", r"\[models"),
        ("[models\n", "not valid TOML"),
    ],
)
def test_bad_price_files_name_the_field(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "p.toml"
    f.write_text(text)
    with pytest.raises(PricingError, match=message):
        Pricing.from_toml(f)


def test_missing_price_file() -> None:
    with pytest.raises(PricingError, match="does not exist"):
        Pricing.from_toml("/nonexistent/prices.toml")
