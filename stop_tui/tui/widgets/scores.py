"""The Scores pane: the accepted improver's meta-utility per iteration (val and test), every
candidate's score and any baselines, drawn as a character chart, with the numbers beside it."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

from rich.text import Text
from textual.geometry import Size
from textual.widget import Widget

from stop_tui.tui import model as m
from stop_tui.tui.actions import key_text, live_keys
from stop_tui.tui.palette import palette

TABLE_WIDTH = 30


def load_baselines(session_dir: Path | None) -> list[dict]:
    """<session_dir>/baselines/<method>.json files: {method, task, scores, mean, ci95}."""
    if session_dir is None:
        return []
    folder = Path(session_dir) / "baselines"
    out = []
    if folder.is_dir():
        for path in sorted(folder.glob("*.json")):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                if isinstance(data.get("mean"), int | float):
                    out.append({"method": str(data.get("method") or path.stem), "mean": float(data["mean"]),
                                "ci95": data.get("ci95")})
            except (OSError, ValueError, AttributeError):
                continue
    return out


def chart_and_side(c: dict[str, str], size: Size, side_width: int,
                   chart: Callable[[int, int, dict[str, str]], Text],
                   side: Callable[[int, dict[str, str]], Text]) -> Text:
    """A pane's chart (`chart(width, height, c)`) with its table (`side(height, c)`) to the
    right when the pane is wide enough (the Scores and compare panes)."""
    width, height = size
    show = width >= side_width + 30
    chart_w = width - (side_width + 1 if show else 0)
    drawn = chart(chart_w, height, c)
    return beside(drawn, side(height, c), chart_w, height, c["faint"]) if show else drawn


def beside(chart: Text, side: Text, chart_w: int, height: int, rule: str) -> Text:
    """`chart` (padded or cut to `chart_w` columns) and `side` next to it, a rule between, for
    `height` rows: the Scores and compare panes' chart with its table."""
    out = Text(no_wrap=True, overflow="crop", end="")
    left = chart.split("\n", allow_blank=True)
    right = side.split("\n", allow_blank=True)
    for row in range(height):
        lt = left[row].copy() if row < len(left) else Text()
        lt.truncate(chart_w, pad=True)
        out.append_text(lt)
        out.append("│", style=rule)
        if row < len(right):
            out.append_text(right[row])
        if row < height - 1:
            out.append("\n")
    return out


def axis_ticks(hi: float, lo: float, rows: int, row_of: Callable[[float], int]) -> dict[int, float]:
    """The y axis's labelled rows: top and bottom, and a middle one whenever there is a row
    between them (the Scores and compare charts)."""
    ticks = {0: hi, rows - 1: lo}
    if rows >= 3:
        ticks.setdefault(row_of((hi + lo) / 2), (hi + lo) / 2)
    return ticks


def y_label(out: Text, tick: float | None, c: dict[str, str]) -> None:
    """A chart row's y axis: its value where it has a tick, then the axis line."""
    out.append((f"{tick:5.2f}" if tick is not None else "     ") + " ", style=c["muted"])
    out.append("┤" if tick is not None else "│", style=c["faint"])


def axis_top(values: list[float]) -> float:
    """The top of the y axis: 1 for scores that live in [0, 1] (every task's utility does);
    otherwise a round number just above the largest value."""
    top = max(values, default=0.0)
    return 1.0 if top <= 1.0 else _nice_top(top)


def _nice_top(x: float) -> float:
    if x <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(x))
    for step in (1, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if step * exp >= x:
            return step * exp
    return 10 * exp


class ScoresPane(Widget):
    HELP = """\
## Scores

The meta-utility û of the **accepted** improver after each iteration, on validation (●) and
test (◇) instances; every candidate improver's û (·); and baselines (┄) when the session
folder has `baselines/*.json`. The table lists each iteration's numbers and verdict.
"""

    def __init__(self, session_model: m.Snapshot, session_dir: Path | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.model = session_model
        self.session_dir = session_dir
        self.baselines = load_baselines(session_dir)
        self.step_key: str | None = None
        self.run_key: str | None = None
        self.activity = "paused"  # the header's state word (app.state): what "no scores yet" says

    def on_mount(self) -> None:
        self.border_title = "Scores"
        self.keys_changed()

    def keys_changed(self, keys: dict[str, list[str]] | None = None) -> None:
        """The step and run keys bound now (after any keymap), named when nothing is scored yet."""
        keys = live_keys(self.screen) if keys is None else keys
        now = (key_text(keys, "run.step_iteration"), key_text(keys, "run.toggle"))
        before, (self.step_key, self.run_key) = (self.step_key, self.run_key), now
        if before != (None, None) and now != before:
            self.refresh()

    def set_activity(self, word: str) -> None:
        """The session's state as the header says it: a run in progress (here or in the process
        that holds it) is not told to press run."""
        if word != self.activity:
            self.activity = word
            self.refresh()

    def _empty_text(self) -> str:
        if self.activity in ("running", "stepping", "watching", "opening"):
            return "No scores yet: the seed improver is being scored."
        if self.activity in ("paused", "new"):
            return f"No scores yet: step an iteration ({self.step_key}) or run ({self.run_key})."
        return "No scores yet."

    def reload_baselines(self) -> None:
        self.baselines = load_baselines(self.session_dir)
        self.refresh()

    def render(self) -> Text:
        return chart_and_side(palette(self.app), self.content_region.size, TABLE_WIDTH, self._chart, self._table)

    def _series(self) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
        vals, tests = [], []
        for t in sorted(self.model.accepted):
            val, test, _ = self.model.accepted[t]
            if isinstance(val, int | float):
                vals.append((t, float(val)))
            if isinstance(test, int | float):
                tests.append((t, float(test)))
        return vals, tests

    def _chart(self, width: int, height: int, c: dict[str, str]) -> Text:
        vals, tests = self._series()
        cands = self.model.candidate_scores
        base = [b["mean"] for b in self.baselines]
        values = [v for _, v in vals] + [v for _, v in tests] + [v for _, v in cands] + base
        if height < 4 or width < 16:
            return Text("")
        if not values:
            return Text(self._empty_text(),
                        style=c["muted"])
        lo = min(0.0, min(values))
        hi = axis_top(values)
        plot_h = height - 2  # a legend line and an axis line
        axis_w = 6
        plot_w = width - axis_w - 1
        if plot_w < 8 or plot_h < 2:
            return Text("")
        planned = int(self.model.settings.get("iterations", 0) or 0)
        last = max([planned, self.model.current_iteration or 0] + [t for t, _ in [*vals, *cands]])
        span = max(last, 1)
        grid = [[" "] * plot_w for _ in range(plot_h)]
        style = [[""] * plot_w for _ in range(plot_h)]

        def row_of(y: float) -> int:
            f = (y - lo) / (hi - lo) if hi > lo else 0.0
            return max(0, min(plot_h - 1, plot_h - 1 - round(f * (plot_h - 1))))

        def col_of(t: float) -> int:
            return max(0, min(plot_w - 1, round(t / span * (plot_w - 1))))

        def put(r: int, x: int, ch: str, st: str, over: bool = True) -> None:
            if over or grid[r][x] == " ":
                grid[r][x], style[r][x] = ch, st

        for b in self.baselines:
            r = row_of(b["mean"])
            for x in range(plot_w):
                put(r, x, "┄", c["accent"], over=False)
            label = f" {b['method']} {b['mean']:.2f}"
            for k, ch in enumerate(label[: plot_w // 2]):
                x = plot_w - len(label[: plot_w // 2]) + k
                put(r, x, ch, c["accent"])
        for (t1, v1), (t2, v2) in zip(vals, vals[1:], strict=False):
            x1, x2 = col_of(t1), col_of(t2)
            prev = row_of(v1)
            for x in range(x1 + 1, x2):
                r = row_of(v1 + (v2 - v1) * (x - x1) / max(1, x2 - x1))
                glyph = "─" if r == prev else ("╱" if r < prev else "╲")
                put(r, x, glyph, c["success"], over=False)
                prev = r
        for t, v in cands:
            put(row_of(v), col_of(t), "∘", c["muted"])
        val_cells = {(row_of(v), col_of(t)) for t, v in vals}
        for t, v in tests:
            r, x = row_of(v), col_of(t)
            if (r, x) in val_cells:
                x = min(plot_w - 1, x + 1)
            put(r, x, "◇", c["secondary"])
        for t, v in vals:
            put(row_of(v), col_of(t), "●", c["success"])
        out = Text(no_wrap=True, overflow="crop", end="")
        ticks = axis_ticks(hi, lo, plot_h, row_of)
        for r in range(plot_h):
            y_label(out, ticks.get(r), c)
            for x in range(plot_w):
                out.append(grid[r][x], style=style[r][x] or None)
            out.append("\n")
        axis = [" "] * plot_w
        for t in range(0, span + 1, max(1, span // max(1, plot_w // 6))):
            s = f"{t}"
            x = col_of(t)
            for k, ch in enumerate(s):
                if x + k < plot_w:
                    axis[x + k] = ch
        out.append(" " * axis_w + "└", style=c["faint"])
        out.append("".join(axis) + "\n", style=c["muted"])
        out.append(" " * axis_w + " ")
        out.append("● val", style=c["success"])
        out.append("  ◇ test", style=c["secondary"])
        out.append("  ∘ candidates", style=c["muted"])
        if self.baselines:
            out.append("  ┄ baselines", style=c["accent"])
        out.append("   x: iteration", style=c["muted"])
        return out

    def _table(self, height: int, c: dict[str, str]) -> Text:
        out = Text(no_wrap=True, overflow="crop", end="")
        out.append(" T   val     test    \n", style=f"bold {c['muted']}")
        rows = sorted(self.model.verdicts)
        keep = max(0, height - 3)
        shown = rows[-keep:] if keep else []
        for t in shown:
            ok, reason = self.model.verdicts[t]
            val, test, _ = self.model.accepted.get(t, (None, None, None))
            vs = f"{val:.4f}" if isinstance(val, int | float) else "  -   "
            ts = f"{test:.4f}" if isinstance(test, int | float) else "  -   "
            out.append(f" {t:<3} {vs}  {ts}  ")
            out.append("✓" if ok else "✗", style=c["success"] if ok else c["warning"])
            out.append("\n")
        cands = self.model.candidate_scores
        if cands and len(shown) + 2 < height:
            best = max(v for _, v in cands)
            out.append(f" {len(cands)} candidates, best {best:.4f}", style=c["muted"])
        return out
