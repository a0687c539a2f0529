"""Concrete colours from the current theme's variables, for Rich renderables built in code.

Stylesheets use theme variables directly; text drawn with Rich (tree labels, charts, diffs)
asks here, and widgets redraw when the theme changes.
"""

from __future__ import annotations

from textual.app import App
from textual.color import Color

NAMES = ("primary", "secondary", "accent", "foreground", "background", "surface", "panel",
         "success", "warning", "error", "success-muted", "error-muted", "warning-muted",
         "primary-muted", "accent-muted")


def palette(app: App) -> dict[str, str]:
    variables = app.theme_variables or app.get_css_variables()
    try:
        background = Color.parse(variables.get("background", "#000000"))
    except Exception:  # noqa: BLE001 - a theme with an odd value still renders
        background = Color(0, 0, 0)
    out: dict[str, str] = {}
    for name in NAMES:
        try:
            color = Color.parse(variables.get(name, "#888888"))
        except Exception:  # noqa: BLE001
            color = Color.parse("#888888")
        if color.a < 1:
            color = background + color
        out[name] = color.hex
    fg = Color.parse(out["foreground"])
    out["muted"] = background.blend(fg, 0.55).hex
    out["faint"] = background.blend(fg, 0.3).hex
    out["dark"] = "true" if app.current_theme.dark else ""
    return out


def syntax_style(app: App) -> str:
    styles = getattr(app, "syntax_styles", {})
    return styles.get(app.theme, "monokai" if app.current_theme.dark else "default")
