"""The paper's numbers (arXiv 2310.02304) that reports print beside ours, read from
paper_numbers.toml, which names where in the paper each one comes from."""

from __future__ import annotations

import tomllib
from functools import cache
from pathlib import Path
from typing import Any

from stop_tui.engine.lm.prices import base_name

FILE = Path(__file__).with_name("paper_numbers.toml")


@cache
def numbers() -> dict[str, Any]:
    return tomllib.loads(FILE.read_text())


def transfer_table() -> dict[str, tuple[float, float, float]]:
    """task -> the paper's (u(s), û(I0), û(IT))."""
    return {task: (float(a), float(b), float(c)) for task, (a, b, c) in numbers()["transfer"]["tasks"].items()}


def transfer_source() -> str:
    return str(numbers()["transfer"]["source"])


def _by_model(section: str, model: str) -> Any:
    table = numbers()[section]["models"]
    return table.get(model, table.get(base_name(model)))


def use_sandbox_off(model: str) -> float | None:
    """The paper's rate of improvers turning use_sandbox off with `model` (None: not reported)."""
    value = _by_model("use_sandbox_off", model)
    return float(value) if value is not None else None


def use_sandbox_off_source() -> str:
    """Where the rates come from, with every model's rate (for a table that shows them all)."""
    section = numbers()["use_sandbox_off"]
    rates = ", ".join(f"{100 * float(v):.2f} % {k}" for k, v in section["models"].items())
    return f"{section['source']} ({rates})"


def gained(model: str) -> tuple[int, int] | None:
    """The paper's (runs that gained at least the threshold, runs) with `model`, if it reports them."""
    value = _by_model("gained", model)
    return (int(value[0]), int(value[1])) if value is not None else None


def gained_source() -> str:
    return str(numbers()["gained"]["source"])
