"""Themes as data files (themes/*.toml, plus the user's own) and the remembered choice.

A theme file holds textual.theme.Theme fields at top level, CSS variables under [variables]
and `syntax`, the Pygments style for program text. The chosen theme is kept per user in
$XDG_CONFIG_HOME/stop-tui/config.json (default ~/.config/stop-tui/config.json).
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from textual.theme import Theme

from stop_tui.engine.paths import themes_dir

DEFAULT_THEME = "dark"
THEME_FIELDS = ("primary", "secondary", "warning", "error", "success", "accent", "foreground",
                "background", "surface", "panel", "boost", "dark", "luminosity_spread",
                "text_alpha")


@dataclass(frozen=True)
class ThemeFile:
    theme: Theme
    syntax: str
    path: Path


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "stop-tui"


def load_theme_file(path: Path) -> ThemeFile:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    name = str(data.get("name") or path.stem)
    kwargs = {k: data[k] for k in THEME_FIELDS if k in data}
    if "primary" not in kwargs:
        raise ValueError(f"{path}: a theme needs at least `primary`")
    variables = {str(k): str(v) for k, v in (data.get("variables") or {}).items()}
    theme = Theme(name=name, variables=variables, **kwargs)
    syntax = str(data.get("syntax") or ("monokai" if kwargs.get("dark", True) else "default"))
    return ThemeFile(theme, syntax, path)


def discover_themes() -> list[ThemeFile]:
    """The shipped themes, then the user's (config_dir()/themes/*.toml); bad files are skipped."""
    found: dict[str, ThemeFile] = {}
    for folder in (themes_dir(), config_dir() / "themes"):
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.toml")):
            try:
                tf = load_theme_file(path)
            except (OSError, ValueError, TypeError, tomllib.TOMLDecodeError):
                continue
            found[tf.theme.name] = tf
    order = ["dark", "light", "paper"]
    return sorted(found.values(), key=lambda tf: (order.index(tf.theme.name)
                                                  if tf.theme.name in order else len(order), tf.theme.name))


def load_config() -> dict:
    try:
        data = json.loads((config_dir() / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_config(updates: dict) -> None:
    """Merge `updates` into the user's config file; failures to write are ignored."""
    path = config_dir() / "config.json"
    data = {**load_config(), **updates}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)
    except OSError:
        pass
