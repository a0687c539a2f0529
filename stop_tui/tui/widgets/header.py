"""The header: session, task, model and state, plus a warning when sandbox protections are missing."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from stop_tui.tui import model as m
from stop_tui.tui.palette import palette

STATES = ("running", "paused", "stepping", "finished", "stopping", "viewing", "watching", "opening", "new")
FIXED_TEMPERATURE = "temperature fixed by the model: the paper's temperatures are not honoured"


class SessionHeader(Widget):
    def __init__(self, session_model: m.SessionModel, **kwargs) -> None:
        super().__init__(**kwargs)
        self.model = session_model
        self.state = "paused"
        self.detail = ""

    def set_state(self, state: str, detail: str = "") -> None:
        if (state, detail) != (self.state, self.detail):
            self.state, self.detail = state, detail
            self.refresh()

    def render(self) -> Text:
        c = palette(self.app)
        md = self.model
        colors = {"running": c["success"], "paused": c["warning"], "stepping": c["accent"],
                  "finished": c["primary"], "stopping": c["error"], "viewing": c["muted"],
                  "watching": c["secondary"], "opening": c["accent"], "new": c["muted"]}
        out = Text(no_wrap=True, overflow="ellipsis", end="")
        out.append(" STOP ", style=f"bold {c['background']} on {c['primary']}")
        out.append(f" {md.session_id}", style="bold")
        out.append("  task ", style=c["muted"])
        out.append(md.task)
        out.append("  model ", style=c["muted"])
        out.append(md.model)
        done, planned = md.iterations_done(), int(md.settings.get("iterations", 0) or 0)
        out.append("  iter ", style=c["muted"])
        out.append(f"{done}/{planned}")
        out.append("  ")
        out.append(f" {self.state} ", style=f"bold {c['background']} on {colors.get(self.state, c['muted'])}")
        if self.detail:
            out.append(f" {self.detail}", style=c["muted"])
        flying = md.in_flight() if self.state in ("running", "stepping", "stopping") else []
        if flying:
            out.append(f"  ⋯ LM call in flight: {flying[-1]}" + (f" (+{len(flying) - 1})" if len(flying) > 1 else ""),
                       style=c["accent"])
        if md.fixed_temperature:
            out.append(f"  ⚠ {FIXED_TEMPERATURE}", style=f"bold {c['warning']}")
        if md.sandbox_missing:
            out.append("  ⚠ sandbox missing: " + ", ".join(md.sandbox_missing),
                       style=f"bold {c['warning']}")
        if md.flags:
            out.append(f"  ⚑ {md.flags} flag{'s' if md.flags != 1 else ''}", style=f"bold {c['warning']}")
        return out
