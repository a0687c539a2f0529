"""The header: session, task, model and state, plus a warning when sandbox protections are missing."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from stop_tui.engine.untrusted import printable
from stop_tui.tui import model as m
from stop_tui.tui.palette import palette

STATES = ("running", "paused", "stepping", "finished", "stopping", "viewing", "watching", "opening", "new")
FIXED_TEMPERATURE = "temperature fixed by the model: the paper's temperatures are not honoured"


class SessionHeader(Widget):
    def __init__(self, session_model: m.Snapshot, **kwargs) -> None:
        super().__init__(**kwargs)
        self.model = session_model
        self.state = "paused"
        self.detail = ""

    def set_state(self, state: str, detail: str = "") -> None:
        if (state, detail) != (self.state, self.detail):
            self.state, self.detail = state, detail
            self.refresh()

    def render(self) -> Text:
        """One line; in a narrow terminal the parts that matter least give way first (the
        warnings' long wording, then the field names, then task, model and iterations, then
        the session id), so the state and who runs the session stay in view."""
        width = self.size.width or 10_000
        for level in range(5):
            out = self._line(level)
            if out.cell_len <= width:
                break
        full = self._line(0).plain.strip() if level else None  # the whole line on hover
        if full != self.tooltip:
            self.tooltip = full
        return out

    def _line(self, level: int) -> Text:
        c = palette(self.app)
        md = self.model
        colors = {"running": c["success"], "paused": c["warning"], "stepping": c["accent"],
                  "finished": c["primary"], "stopping": c["error"], "viewing": c["muted"],
                  "watching": c["secondary"], "opening": c["accent"], "new": c["muted"]}
        out = Text(no_wrap=True, overflow="ellipsis", end="")
        out.append(" STOP ", style=f"bold {c['background']} on {c['primary']}")
        if level < 4:
            out.append(f" {md.session_id}", style="bold")
        if level < 3:
            named = level < 2
            out.append("  task " if named else "  ", style=c["muted"])
            out.append(md.task)
            out.append("  model " if named else " · ", style=c["muted"])
            out.append(md.model)
            done, planned = md.iterations_done(), int(md.settings.get("iterations", 0) or 0)
            out.append("  iter " if named else " · T ", style=c["muted"])
            out.append(f"{done}/{planned}")
        out.append("  ")
        out.append(f" {self.state} ", style=f"bold {c['background']} on {colors.get(self.state, c['muted'])}")
        if self.detail:
            out.append(f" {printable(self.detail)}", style=c["muted"])
        flying = md.in_flight() if self.state in ("running", "stepping", "stopping") else []
        if flying:
            out.append(f"  ⋯ LM call in flight: {flying[-1]}" + (f" (+{len(flying) - 1})" if len(flying) > 1 else ""),
                       style=c["accent"])
        warn = f"bold {c['warning']}"
        if md.rng_reference:
            out.append("  rng=reference", style=warn)
        if md.fixed_temperature:
            out.append(f"  ⚠ {FIXED_TEMPERATURE if level == 0 else 'temperature fixed by the model'}", style=warn)
        if md.sandbox_missing:
            out.append("  ⚠ sandbox missing: " + ", ".join(md.sandbox_missing) if level == 0
                       else f"  ⚠ sandbox: {len(md.sandbox_missing)} missing", style=warn)
        if md.flags:
            out.append(f"  ⚑ {md.flags} flag{'s' if md.flags != 1 else ''}", style=warn)
        return out
