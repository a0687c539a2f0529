"""A report's figures (`stop-tui report --plot`, the HTML report): the self-improvement curve
(the paper's figure, arXiv 2310.02304 section 5), the transfer bars (its transfer table) and
the LM spend per iteration.

- `curve`: one panel per task; per (model, preset) group the mean meta-utility at T = 0..N,
  val solid and test dashed, each with its 95 % interval band across runs (aggregate.curve).
- `transfer`: one panel per (source task, model): per target task, bars of u(s), û(I0) and
  û(IT) (test split) with their 95 % intervals as error bars, the paper's numbers as black
  diamonds where it reports them.
- `spend`: per iteration and group, the mean LM spend of a run with its 95 % interval, in
  dollars, or in tokens when the report's models cost $0 (local models, unpriced ones).

matplotlib is an optional extra (`stop-tui[plots]`): it is imported here, inside the functions,
never at module import; without it they raise PlotsUnavailable (a UserError: exit 2). Drawn
on figures of their own (no pyplot, no global backend), with matplotlib's default style and
fixed settings, so a user's matplotlibrc changes nothing. SVG output is deterministic: a fixed
`svg.hashsalt` for its ids, no date, no file path or time in it, text kept as <text> (so the
labels can be read and searched); PNG at 150 dpi for slides.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stop_tui.engine.errors import UserError
from stop_tui.engine.report.aggregate import interval
from stop_tui.engine.report.model import Interval, Report

if TYPE_CHECKING:
    from matplotlib.figure import Figure

NAMES = ("curve", "transfer", "spend")
FORMATS = ("svg", "png")
INSTALL = "install it: pip install 'stop-tui[plots]'"
# matplotlib's tab10, in order: one colour per model (the same model, the same colour everywhere).
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")
MEASURES = (("seed_solution", "u(s)", "#9e9e9e"), ("seed_improver", "û(I0)", "#6baed6"),
            ("improver", "û(IT)", "#08519c"))
RC = {
    "svg.hashsalt": "stop-tui",  # the ids of clip paths and the like: fixed, not random
    "svg.fonttype": "none",  # text stays text
    "font.family": "DejaVu Sans",  # shipped with matplotlib: the same metrics on every machine
    "font.size": 9.0,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.fontsize": 8.0,
    "legend.frameon": False,
    "figure.dpi": 100.0,
}
PNG_DPI = 150
SPEND_BOUNDS = (0.0, math.inf)  # spend is not a score: its interval is not clipped to [0, 1]


class PlotsUnavailable(UserError):
    """matplotlib (the `plots` extra) is not installed."""

    def __init__(self) -> None:
        super().__init__(f"figures need matplotlib, which is not installed: {INSTALL}")


def _matplotlib() -> Any:
    try:
        import matplotlib
        import matplotlib.figure  # noqa: F401 - the Figure class
        import matplotlib.style  # noqa: F401
    except ImportError:
        raise PlotsUnavailable() from None
    return matplotlib


def available(report: Report) -> tuple[str, ...]:
    """The figures that have something to draw for `report`, in NAMES order."""
    has = {"curve": any(p.val.mean is not None or p.test.mean is not None for g in report.groups for p in g.curve),
           "transfer": any(report.transfer.values()),
           "spend": any(r.spend_by_iteration or r.tokens_by_iteration for g in report.groups for r in g.runs)}
    return tuple(name for name in NAMES if has[name])


def _check(name: str, fmt: str) -> None:
    if name not in NAMES:
        raise UserError(f"no figure {name!r} (figures: {', '.join(NAMES)})")
    if fmt not in FORMATS:
        raise UserError(f"a figure is written as {' or '.join(FORMATS)}, not {fmt!r}")


def render(report: Report, name: str, fmt: str) -> bytes:
    """Figure `name` (one of NAMES) of `report` as SVG or PNG bytes. A figure without data
    (no transfer sessions, say) is drawn with a line saying so."""
    _check(name, fmt)
    mpl = _matplotlib()
    with mpl.style.context("default"), mpl.rc_context({**RC, "svg.id": f"stop-tui-{name}"}):
        fig = figure(report, name)
        out = io.BytesIO()
        if fmt == "svg":
            fig.savefig(out, format="svg", metadata={"Date": None, "Creator": "stop-tui"})
        else:
            fig.savefig(out, format="png", dpi=PNG_DPI, metadata={"Software": "stop-tui"})
    return out.getvalue()


def svg_element(report: Report, name: str) -> str:
    """Figure `name` as its <svg> element alone (no XML prolog), to embed in an HTML page; its
    root id is `stop-tui-<name>`, and the ids inside are hashes of what they define, so several
    figures share a page without clashing."""
    svg = render(report, name, "svg").decode("utf-8")
    return svg[svg.index("<svg"):]


def targets(report: Report, path: Path) -> list[tuple[str, Path]]:
    """(figure, file) pairs `write` makes of `path`. Its suffix (.svg, .png) is the format. A
    stem that names a figure (`curve.svg`, `sweep-transfer.png`) writes that figure alone (an
    error when the report has nothing for it); any other (`fig.svg`) writes each figure that
    has something to draw as `<stem>-<name><suffix>` (`fig-curve.svg`, `fig-spend.svg`, ...)."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise UserError(f"--plot {path}: a figure file ends in .svg or .png")
    have = available(report)
    one = next((n for n in NAMES if path.stem == n or path.stem.endswith("-" + n)), None)
    if one is not None:
        if one not in have:
            raise UserError(f"--plot {path}: nothing to draw for the {one} figure ({_missing(one)})")
        return [(one, path)]
    if not have:
        raise UserError(f"--plot {path}: nothing to draw (no run has been scored yet)")
    return [(name, path.with_name(f"{path.stem}-{name}{path.suffix}")) for name in have]


def write(report: Report, path: Path) -> list[Path]:
    """Write the figures `targets(report, path)` names; the files written. Every figure is
    drawn before any file is written (a missing matplotlib leaves nothing behind)."""
    plan = targets(report, path)
    fmt = Path(path).suffix.lower().lstrip(".")
    drawn = [(file, render(report, name, fmt)) for name, file in plan]
    for file, data in drawn:
        try:
            file.write_bytes(data)
        except OSError as exc:
            raise UserError(f"cannot write {file}: {exc.strerror or exc}") from None
    return [file for file, _ in drawn]


def _missing(name: str) -> str:
    return {"curve": "no run has been scored yet", "transfer": "no transfer sessions in this report",
            "spend": "no LM use recorded"}[name]


# -- the figures ------------------------------------------------------------------------------

def figure(report: Report, name: str) -> Figure:
    """Figure `name` of `report` as a matplotlib Figure (inside `render`'s style context)."""
    _check(name, "svg")
    _matplotlib()
    if name not in available(report):
        return _note(report, name)
    return {"curve": _curve, "transfer": _transfer, "spend": _spend}[name](report)


def _new(panels: int, width: float = 5.0, height: float = 3.6) -> tuple[Figure, list[Any]]:
    from matplotlib.figure import Figure

    cols = min(panels, 3)
    rows = math.ceil(panels / cols)
    fig = Figure(figsize=(width * cols, height * rows + 0.5), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).flatten().tolist()
    for ax in axes[panels:]:
        ax.set_visible(False)
    return fig, axes[:panels]


def _note(report: Report, name: str) -> Figure:
    fig, (ax,) = _new(1, height=2.0)
    ax.set_axis_off()
    ax.text(0.5, 0.5, f"{report.title}: nothing to draw for the {name} figure ({_missing(name)})",
            ha="center", va="center", transform=ax.transAxes)
    return fig


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _model_colours(report: Report) -> dict[str, str]:
    models: list[str] = []
    for g in report.groups:
        if g.model not in models:
            models.append(g.model)
    for _, model in report.transfer:
        if model not in models:
            models.append(model)
    return {m: COLOURS[i % len(COLOURS)] for i, m in enumerate(models)}


def _group_label(report: Report, model: str, preset: str | None, task: str | None = None) -> str:
    presets = {g.preset for g in report.groups}
    label = f"{task} · {model}" if task else model
    return f"{label} ({preset})" if len(presets) > 1 and preset else label


def _band(ax: Any, ts: Sequence[int], points: Sequence[Interval], colour: str, alpha: float) -> None:
    lo = [_nan(p.lo) for p in points]
    hi = [_nan(p.hi) for p in points]
    if any(not math.isnan(v) for v in lo):
        ax.fill_between(ts, lo, hi, color=colour, alpha=alpha, linewidth=0)


def _curve(report: Report) -> Figure:
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    colours = _model_colours(report)
    tasks = list(dict.fromkeys(g.task for g in report.groups))
    fig, axes = _new(len(tasks))
    for ax, task in zip(axes, tasks, strict=True):
        handles = []
        for g in (g for g in report.groups if g.task == task):
            colour = colours[g.model]
            ts = [p.t for p in g.curve]
            _band(ax, ts, [p.val for p in g.curve], colour, 0.2)
            _band(ax, ts, [p.test for p in g.curve], colour, 0.08)
            label = (f"{_group_label(report, g.model, g.preset)}: {len(g.runs)} runs, "
                     f"{g.gained} gained ≥ {100 * g.gain_threshold:g} pts")
            (line,) = ax.plot(ts, [_nan(p.val.mean) for p in g.curve], color=colour, marker="o",
                              markersize=3.5, label=label, gid=f"val:{g.model}")
            ax.plot(ts, [_nan(p.test.mean) for p in g.curve], color=colour, linestyle="--", marker="o",
                    markersize=3.5, markerfacecolor="white", gid=f"test:{g.model}")
            handles.append(line)
        handles += [Line2D([], [], color="#555555", label="val"),
                    Line2D([], [], color="#555555", linestyle="--", markerfacecolor="white", label="test")]
        ax.set_title(task)
        ax.set_xlabel("iteration T")
        ax.set_ylabel("meta-utility û (mean, 95 % interval)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(handles=handles, loc="best")
    fig.suptitle(f"{report.title}: self-improvement over iterations")
    return fig


def _transfer(report: Report) -> Figure:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    keys = [k for k in report.transfer if report.transfer[k]]
    fig, axes = _new(len(keys), width=max(5.0, 1.2 * max(len(report.transfer[k]) for k in keys) + 1.5))
    width = 0.26
    for ax, key in zip(axes, keys, strict=True):
        rows = report.transfer[key]
        for i, (attr, _, colour) in enumerate(MEASURES):
            xs = [j + (i - 1) * width for j in range(len(rows))]
            cells: list[Interval] = [getattr(r, attr) for r in rows]
            means = [_nan(c.mean) for c in cells]
            err = [[0.0 if c.lo is None or c.mean is None else c.mean - c.lo for c in cells],
                   [0.0 if c.hi is None or c.mean is None else c.hi - c.mean for c in cells]]
            ax.bar(xs, means, width, color=colour, yerr=err, capsize=2.5, ecolor="#333333",
                   error_kw={"linewidth": 0.8}, gid=f"bars:{attr}")
            paper = [(x, r.paper[i]) for x, r in zip(xs, rows, strict=True) if r.paper and r.paper[i] is not None]
            if paper:
                ax.plot([x for x, _ in paper], [v for _, v in paper], linestyle="none", marker="D",
                        markersize=4, color="black", gid=f"paper:{attr}")
        ax.set_xticks(range(len(rows)), [r.task for r in rows])
        ax.set_ylabel("test utility (mean, 95 % interval)")
        ax.set_title(f"the {key[0]} improver of {key[1]} on other tasks")
        handles = [Patch(color=c, label=label) for _, label, c in MEASURES]
        if any(r.paper for r in rows):
            handles.append(Line2D([], [], linestyle="none", marker="D", markersize=4, color="black",
                                  label="the paper"))
        ax.legend(handles=handles, loc="best")
    fig.suptitle(f"{report.title}: transfer")
    return fig


def _spend(report: Report) -> Figure:
    from matplotlib.ticker import MaxNLocator

    dollars = any(d > 0 for g in report.groups for r in g.runs for d in r.spend_by_iteration)
    groups = [g for g in report.groups if any(r.spend_by_iteration or r.tokens_by_iteration for r in g.runs)]
    fig, (ax,) = _new(1, width=6.0)
    colours = _model_colours(report)
    tasks = {g.task for g in groups}
    width = 0.8 / len(groups)
    for i, g in enumerate(groups):
        top = max(len(r.spend_by_iteration if dollars else r.tokens_by_iteration) for r in g.runs)
        ts = list(range(top))
        series = [r.spend_by_iteration if dollars else r.tokens_by_iteration for r in g.runs]
        cells = [interval([float(s[t]) for s in series if t < len(s)], SPEND_BOUNDS) for t in ts]
        means = [_nan(c.mean) for c in cells]
        err = [[0.0 if c.lo is None else c.mean - c.lo for c in cells],
               [0.0 if c.hi is None else c.hi - c.mean for c in cells]]
        xs = [t + (i - (len(groups) - 1) / 2) * width for t in ts]
        hatch = None if len(tasks) == 1 or g.task == groups[0].task else "//"
        ax.bar(xs, means, width, color=colours[g.model], yerr=err, capsize=2.5, ecolor="#333333",
               error_kw={"linewidth": 0.8}, hatch=hatch, gid=f"spend:{g.task}:{g.model}",
               label=f"{_group_label(report, g.model, g.preset, g.task if len(tasks) > 1 else None)}"
                     f" ({len(g.runs)} runs)")
    ax.set_xlabel("iteration T")
    ax.set_ylabel(("dollars" if dollars else "tokens") + " per run (mean, 95 % interval)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="best")
    s = report.spend
    total = f"${s.dollars:.4f}, " if dollars else ""
    fig.suptitle(f"{report.title}: LM spend per iteration (in all: {total}{s.tokens} tokens, {s.calls} calls)")
    return fig
