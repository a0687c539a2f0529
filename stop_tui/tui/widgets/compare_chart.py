"""The compare screen's Scores: the meta-utility of the improver each run held after t = 0..N
(val or test), every run's curve overlaid, the 95 % interval band of each group (task, model,
preset) shaded behind them and the group's mean marked; beside the chart, each group's numbers
(mean and interval per t, how many runs gained at least 3 points over t = 0).

Colours come from the theme (tui/palette.py): one per group, or one per session (`by`), in
SERIES order; the y axis spans the scores shown, in tenths (`y_range`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text
from textual.color import Color
from textual.widget import Widget

from stop_tui.engine.report.live import LiveRun
from stop_tui.engine.report.model import Group
from stop_tui.tui.palette import palette
from stop_tui.tui.widgets.scores import axis_ticks, axis_top, chart_and_side, y_label

SERIES = ("success", "secondary", "accent", "warning", "primary", "error")
BY_GROUP, BY_SESSION = "group", "session"
SIDE_WIDTH = 36
BAND_ALPHA = 0.28  # how much of a group's colour a band cell takes over what is under it


def y_range(values: Sequence[float]) -> tuple[float, float]:
    """The y axis: the scores' range widened to tenths (curves that differ by a few points stay
    apart), at least 0.2 tall; above 1, scores.py's round top."""
    low, high = min(values), max(values)
    if high > 1.0:
        return min(0.0, low), axis_top(list(values))
    lo, hi = math.floor(low * 10) / 10, math.ceil(high * 10) / 10
    if hi - lo < 0.2:
        lo, hi = max(0.0, hi - 0.2), max(hi, 0.2)
        lo = min(lo, hi - 0.2)
    return lo, hi


def group_name(g: Group) -> str:
    return f"{g.task} · {g.model}" + (f" · {g.preset}" if g.preset else "")


def series_colors(c: dict[str, str], n: int) -> list[str]:
    return [c[SERIES[k % len(SERIES)]] for k in range(n)]


def _num(x: float | None) -> str:
    return f"{x:.4f}" if x is not None else "  -   "


@dataclass
class Colours:
    """Who is drawn in which colour: group index -> colour, session name -> colour."""

    groups: list[str]
    runs: dict[str, str]


def colours(c: dict[str, str], runs: Sequence[LiveRun], groups: Sequence[Group], by: str) -> Colours:
    """One colour per group; each run in its group's colour (`by` BY_GROUP) or its own
    (BY_SESSION, in the order of the runs)."""
    group_colours = series_colors(c, len(groups))
    index = {(g.task, g.model, g.preset): k for k, g in enumerate(groups)}
    own = series_colors(c, len(runs))
    runs_out: dict[str, str] = {}
    for k, run in enumerate(runs):
        g = index.get(run.key)
        if by == BY_SESSION:
            runs_out[run.row.session] = own[k]
        elif g is not None:
            runs_out[run.row.session] = group_colours[g]
        else:  # unreadable: no group
            runs_out[run.row.session] = c["muted"]
    return Colours(group_colours, runs_out)


class CompareChart(Widget):
    """The overlaid curves and the groups' numbers (help: screens/compare.CompareScreen.HELP)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.runs: tuple[LiveRun, ...] = ()
        self.groups: tuple[Group, ...] = ()
        self.split = "val"
        self.by = BY_GROUP

    def on_mount(self) -> None:
        self.border_title = "Scores"

    def show(self, runs: tuple[LiveRun, ...], groups: tuple[Group, ...]) -> None:
        self.runs, self.groups = runs, groups
        self.refresh()

    def set_split(self, split: str) -> None:
        self.split = split
        self.border_title = "Scores" if split == "val" else "Scores · test"
        self.refresh()

    def set_by(self, by: str) -> None:
        self.by = by
        self.refresh()

    def colours(self) -> Colours:
        return colours(palette(self.app), self.runs, self.groups, self.by)

    # -- drawing ------------------------------------------------------------------------------
    def render(self) -> Text:
        return chart_and_side(palette(self.app), self.content_region.size, SIDE_WIDTH, self._chart, self._side)

    def _curve(self, values: Sequence[float | None]) -> list[tuple[int, float]]:
        return [(t, float(v)) for t, v in enumerate(values) if v is not None]

    def _chart(self, width: int, height: int, c: dict[str, str]) -> Text:
        test = self.split == "test"
        lines = {run.row.session: self._curve(run.row.test if test else run.row.val) for run in self.runs}
        bands = [[(p.t, p.test if test else p.val) for p in g.curve] for g in self.groups]
        values = [v for pts in lines.values() for _, v in pts]
        values += [x for band in bands for _, i in band for x in (i.lo, i.hi, i.mean) if x is not None]
        if height < 4 or width < 16:
            return Text("")
        if not values:
            what = "no session to compare" if not self.runs else f"no {self.split} scores yet"
            return Text(f"{what.capitalize()}: the curves appear as the runs score their improvers.",
                        style=c["muted"])
        lo, hi = y_range(values)
        plot_h, axis_w = height - 2, 6  # a legend line and an axis line
        plot_w = width - axis_w - 1
        if plot_w < 8 or plot_h < 2:
            return Text("")
        planned = [run.planned for run in self.runs if run.planned is not None]
        span = max([1, *planned, *(t for pts in lines.values() for t, _ in pts)])
        grid = [[" "] * plot_w for _ in range(plot_h)]
        fg = [[""] * plot_w for _ in range(plot_h)]
        bands_at: list[list[list[int]]] = [[[] for _ in range(plot_w)] for _ in range(plot_h)]  # groups per cell

        def row_of(y: float) -> int:
            f = (y - lo) / (hi - lo) if hi > lo else 0.0
            return max(0, min(plot_h - 1, plot_h - 1 - round(f * (plot_h - 1))))

        def col_of(t: float) -> int:
            return max(0, min(plot_w - 1, round(t / span * (plot_w - 1))))

        def put(r: int, x: int, ch: str, st: str) -> None:
            grid[r][x], fg[r][x] = ch, st

        col = self.colours()
        surface = Color.parse(c["surface"])  # the pane's background
        for k, band in enumerate(bands):  # the groups' intervals, behind everything
            known = [(t, i.lo, i.hi) for t, i in band if i.lo is not None and i.hi is not None]
            for (t1, lo1, hi1), (t2, lo2, hi2) in zip(known, known[1:] or known, strict=False):
                x1, x2 = col_of(t1), col_of(t2)
                for x in range(x1, x2 + 1):
                    f = (x - x1) / (x2 - x1) if x2 > x1 else 0.0
                    top, bottom = row_of(hi1 + (hi2 - hi1) * f), row_of(lo1 + (lo2 - lo1) * f)
                    for r in range(top, bottom + 1):
                        if k not in bands_at[r][x]:
                            bands_at[r][x].append(k)
        shades: dict[tuple[int, ...], str] = {}

        def shade(groups_here: list[int]) -> str:
            """The cell's background: each group's colour over the pane's, so overlaps mix."""
            key = tuple(groups_here)
            if key not in shades:
                colour = surface
                for k in key:
                    colour = colour.blend(Color.parse(col.groups[k]), BAND_ALPHA)
                shades[key] = colour.hex
            return shades[key]
        for run in self.runs:  # each run's curve
            pts, colour = lines[run.row.session], col.runs[run.row.session]
            for (t1, v1), (t2, v2) in zip(pts, pts[1:], strict=False):
                x1, x2 = col_of(t1), col_of(t2)
                prev = row_of(v1)
                for x in range(x1 + 1, x2):
                    r = row_of(v1 + (v2 - v1) * (x - x1) / max(1, x2 - x1))
                    put(r, x, "─" if r == prev else ("╱" if r < prev else "╲"), colour)
                    prev = r
        for run in self.runs:
            for t, v in lines[run.row.session]:
                put(row_of(v), col_of(t), "•", col.runs[run.row.session])
        for k, band in enumerate(bands):  # the groups' means, on top
            for t, i in band:
                if i.mean is not None:
                    put(row_of(i.mean), col_of(t), "◆", f"bold {col.groups[k]}")
        out = Text(no_wrap=True, overflow="crop", end="")
        ticks = axis_ticks(hi, lo, plot_h, row_of)
        for r in range(plot_h):
            y_label(out, ticks.get(r), c)
            for x in range(plot_w):
                style = " ".join(filter(None, (fg[r][x], f"on {shade(bands_at[r][x])}" if bands_at[r][x] else "")))
                out.append(grid[r][x], style=style or None)
            out.append("\n")
        axis = [" "] * plot_w
        for t in range(0, span + 1, max(1, span // max(1, plot_w // 6))):
            x = col_of(t)
            for k, ch in enumerate(str(t)):
                if x + k < plot_w:
                    axis[x + k] = ch
        out.append(" " * axis_w + "└", style=c["faint"])
        out.append("".join(axis) + "\n", style=c["muted"])
        out.append(" " * axis_w + " ")
        out.append(f"• {self.split} per run", style=c["foreground"])
        out.append("  ◆ group mean", style=c["foreground"])
        out.append("  ", style=c["muted"])
        out.append("   ", style=f"on {surface.blend(Color.parse(c['muted']), BAND_ALPHA).hex}")
        out.append(" 95 % interval", style=c["muted"])
        out.append("   x: iteration", style=c["muted"])
        return out

    def _side(self, height: int, c: dict[str, str]) -> Text:
        """Each group: its name, the gain count, then mean [lo, hi] per t (as many as fit)."""
        out = Text(no_wrap=True, overflow="crop", end="")
        col = self.colours()
        test = self.split == "test"
        lines: list[Text] = []
        for k, g in enumerate(self.groups):
            lines.append(Text(f"■ {group_name(g)}", style=f"bold {col.groups[k]}"))
            lines.append(Text(f"  {len(g.runs)} runs, {g.gained} gained ≥ {g.gain_threshold * 100:.0f} pts",
                              style=c["muted"]))
            for p in g.curve:
                i = p.test if test else p.val
                band = f"[{i.lo:.3f}, {i.hi:.3f}]" if i.lo is not None and i.hi is not None else ""
                lines.append(Text(f"  T{p.t:<2} {_num(i.mean)} {band:<14} n={i.n}"))
        if not lines:
            lines.append(Text(" no groups yet", style=c["muted"]))
        for k, line in enumerate(lines[:height]):
            out.append(" ")
            out.append_text(line)
            if k < min(len(lines), height) - 1:
                out.append("\n")
        return out
