"""Where the package's data (tasks/, themes/) lives: a checkout or an installed wheel."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent


def data_dir(name: str) -> Path:
    """`tasks` or `themes`: the checkout's top-level folder, else the wheel's copy."""
    checkout = _PACKAGE.parent / name
    if checkout.is_dir():
        return checkout
    return _PACKAGE / "_data" / name


def tasks_dir() -> Path:
    return data_dir("tasks")


def themes_dir() -> Path:
    return data_dir("themes")
