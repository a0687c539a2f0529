"""Dollar prices per model, from prices.toml."""

from __future__ import annotations

import re
import tomllib
from functools import cache
from pathlib import Path


@cache
def _table() -> dict[str, tuple[float, float]]:
    data = tomllib.loads((Path(__file__).with_name("prices.toml")).read_text())
    return {k: (float(v[0]), float(v[1])) for k, v in data["models"].items()}


def base_name(model: str) -> str:
    """The model's name without a date suffix: gpt-4o-mini-2024-07-18, gpt-4-0314 -> gpt-4o-mini, gpt-4."""
    return re.sub(r"-(\d{4}-\d{2}-\d{2}|\d{4})$", "", model)


def price(model: str) -> tuple[float, float] | None:
    """(input, output) USD per million tokens, or None when unknown."""
    table = _table()
    if model in table:
        return table[model]
    return table.get(base_name(model))


def cost(model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
    rates = price(model)
    if rates is None:
        return None
    return (prompt_tokens * rates[0] + completion_tokens * rates[1]) / 1_000_000
