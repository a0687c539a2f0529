"""The Log pane: engine events as one line each, newest last, capped."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import RichLog

from stop_tui.engine.untrusted import printable
from stop_tui.tui import model as m
from stop_tui.tui.palette import palette

MAX_LINES = 2000
MAX_PER_UPDATE = 60  # a burst of events shows its newest lines (the database keeps them all)


class LogPane(RichLog):
    HELP = """\
## Log

Engine events, newest last (the last 2,000 are kept on screen; the session's database keeps
them all). Times are from the start of the session.
"""

    def __init__(self, **kwargs) -> None:
        super().__init__(max_lines=MAX_LINES, wrap=False, markup=False, highlight=False,
                         auto_scroll=True, **kwargs)
        self.t0: float | None = None

    def on_mount(self) -> None:
        self.border_title = "Log"

    def on_resize(self) -> None:
        # Lines written before the first layout are placed once the size is known; keep the
        # newest in view then (a small terminal otherwise showed the session's first lines).
        if self.auto_scroll:
            self.call_after_refresh(self.scroll_end, animate=False)

    def add_lines(self, lines: list[m.LogLine], t0: float | None) -> None:
        if not lines:
            return
        self.t0 = t0 if self.t0 is None else self.t0
        c = palette(self.app)
        colors = {"info": c["foreground"], "good": c["success"], "bad": c["error"], "warn": c["warning"],
                  "dim": c["muted"]}
        if len(lines) > MAX_PER_UPDATE:
            skipped = len(lines) - MAX_PER_UPDATE
            self.write(Text(f"… {skipped:,} more events (stop-tui show / export has them all)",
                            style=c["muted"], no_wrap=True, end=""))
            lines = lines[-MAX_PER_UPDATE:]
        for line in lines:
            rel = max(0.0, line.t - (self.t0 or line.t))
            minutes, seconds = divmod(int(rel), 60)
            hours, minutes = divmod(minutes, 60)
            stamp = f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:02d}:{seconds:02d}"
            text = Text(no_wrap=True, end="")
            text.append(f"{stamp} ", style=c["muted"])
            text.append(f"{line.path or 'session':<18} ", style=c["primary"])
            text.append(printable(line.text), style=colors.get(line.level, c["foreground"]))
            self.write(text)
