"""The report's figures (engine/report/figures.py), from Reports built by hand from model.py
values: what each figure draws (means, interval bands, error bars, the paper's markers, the
spend unit), the SVG compared byte for byte with the stored one in tests/figures/ (rewrite them
with STOP_TUI_UPDATE_FIGURES=1 after a deliberate change, and look at them), the SVG changing
with the data, `write`'s file names, and the message without matplotlib."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import ROOT

from stop_tui.engine.errors import UserError
from stop_tui.engine.report.aggregate import group
from stop_tui.engine.report.model import Interval, Report, RunRow, Spend, TransferRow

pytest.importorskip("matplotlib")
from stop_tui.engine.report import figures  # noqa: E402

STORED = Path(__file__).resolve().parent / "figures"


def run(session: str, val, test, tokens=(), dollars=(), state="finished") -> RunRow:
    scored = [t for t, v in enumerate(val) if v is not None]
    final = scored[-1] if scored else None
    best = max(scored, key=lambda t: val[t]) if scored else None
    return RunRow(session=session, folder=f"/nowhere/{session}", seed=int(session[-1]), state=state,
                  val=tuple(val), test=tuple(test), best_t=best, best_val=val[best] if best is not None else None,
                  final_t=final, final_val=val[final] if final is not None else None,
                  gain=(val[final] - val[0]) if final is not None else None, calls=3 * len(val),
                  tokens=sum(tokens), dollars=sum(dollars), spend_by_iteration=tuple(dollars),
                  tokens_by_iteration=tuple(tokens))


# Three gpt runs of 2 iterations (two gain >= 3 points), two "other" runs of 1 (one gains 2
# points, one 15): the curve is over the runs that reached t.
GPT = (run("sw/lpn-gpt-s0", (0.50, 0.60, 0.70), (0.45, 0.55, 0.65), (1000, 2000, 2200)),
       run("sw/lpn-gpt-s1", (0.50, 0.55, 0.50), (0.50, 0.50, 0.45), (1000, 1800, 2000)),
       run("sw/lpn-gpt-s2", (0.40, 0.50, 0.60), (0.40, 0.45, 0.55), (1000, 2100, 1900)))
OTHER = (run("sw/lpn-other-s0", (0.30, 0.32), (0.30, 0.30), (800, 900)),
         run("sw/lpn-other-s1", (0.30, 0.45), (0.25, 0.40), (800, 1100)))


def iv(mean, lo, hi, n=5) -> Interval:
    return Interval(mean, lo, hi, n)


TRANSFER = {("lpn", "gpt"): (
    TransferRow("grid", iv(0.44, 0.44, 0.44), iv(0.45, 0.41, 0.49), iv(0.55, 0.50, 0.60),
                (0.439, 0.443, 0.567), "arXiv 2310.02304, transfer table"),
    TransferRow("mqa", iv(0.20, 0.20, 0.20), iv(0.21, 0.18, 0.24), iv(0.19, 0.15, 0.23), None, None),
)}


def report(gpt=GPT, other=OTHER, transfer=TRANSFER) -> Report:
    groups = (group("lpn", "gpt", "quick", gpt), group("lpn", "other", "quick", other))
    runs = [*gpt, *other]
    return Report(title="sw", groups=groups, transfer=transfer,
                  spend=Spend(sum(r.calls for r in runs), sum(r.tokens for r in runs),
                              sum(r.dollars for r in runs)))


def _axes(fig):
    return [ax for ax in fig.axes if ax.get_visible()]


def _line(ax, gid):
    (line,) = [ln for ln in ax.lines if ln.get_gid() == gid]
    return [None if math.isnan(y) else round(float(y), 6) for y in line.get_ydata()]


def _bands(ax):
    """(lo, hi) per x of each fill_between band, in drawing order."""
    out = []
    for coll in ax.collections:
        if type(coll).__name__ not in ("PolyCollection", "FillBetweenPolyCollection"):
            continue
        v = coll.get_paths()[0].vertices
        xs = sorted({round(float(x), 6) for x in v[:, 0]})
        lo = [round(min(float(y) for x2, y in v if round(float(x2), 6) == x), 4) for x in xs]
        hi = [round(max(float(y) for x2, y in v if round(float(x2), 6) == x), 4) for x in xs]
        out.append((lo, hi))
    return out


def test_curve_draws_the_mean_and_the_interval_band_per_model():
    fig = figures.figure(report(), "curve")
    (ax,) = _axes(fig)  # one task: one panel
    assert ax.get_title() == "lpn"
    # gpt val at T=0..2: (0.5+0.5+0.4)/3, (0.6+0.55+0.5)/3, (0.7+0.5+0.6)/3
    assert _line(ax, "val:gpt") == [0.466667, 0.55, 0.6]
    assert _line(ax, "test:gpt") == [0.45, 0.5, 0.55]
    assert _line(ax, "val:other") == [0.3, 0.385]
    bands = _bands(ax)
    assert len(bands) == 4  # val and test, per model
    gpt_val = bands[0]
    # T=2: sd 0.1 over 3 runs, t(2) = 4.303: 0.6 -+ 4.303 * 0.1 / sqrt(3) = [0.3516, 0.8484]
    assert gpt_val[0][2] == 0.3516 and gpt_val[1][2] == 0.8484
    # "other": T=0 both 0.30 (no spread); T=1 0.32 and 0.45: 0.385 -+ 12.706 * 0.0919 / sqrt(2),
    # clipped to [0, 1] (a score)
    assert bands[2] == ([0.3, 0.0], [0.3, 1.0])
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["gpt: 3 runs, 2 gained ≥ 3 pts", "other: 2 runs, 1 gained ≥ 3 pts", "val", "test"]


def test_transfer_draws_bars_with_error_bars_and_the_papers_numbers():
    fig = figures.figure(report(), "transfer")
    (ax,) = _axes(fig)
    bars = [c for c in ax.containers if type(c).__name__ == "BarContainer"]
    assert len(bars) == 3  # u(s), û(I0), û(IT)
    heights = [[round(p.get_height(), 6) for p in c.patches] for c in bars]
    assert heights == [[0.44, 0.2], [0.45, 0.21], [0.55, 0.19]]
    segments = bars[2].errorbar.lines[2][0].get_segments()
    assert [(round(s[0][1], 6), round(s[1][1], 6)) for s in segments] == [(0.5, 0.6), (0.15, 0.23)]
    paper = {ln.get_gid(): [round(float(y), 6) for y in ln.get_ydata()] for ln in ax.lines
             if (ln.get_gid() or "").startswith("paper:")}
    assert paper == {"paper:seed_solution": [0.439], "paper:seed_improver": [0.443], "paper:improver": [0.567]}
    assert [t.get_text() for t in ax.get_xticklabels()] == ["grid", "mqa"]


def test_spend_is_in_tokens_when_the_runs_cost_nothing_and_in_dollars_otherwise():
    fig = figures.figure(report(), "spend")
    (ax,) = _axes(fig)
    assert ax.get_ylabel().startswith("tokens per run")
    bars = [c for c in ax.containers if type(c).__name__ == "BarContainer"]
    # gpt, T=1: (2000 + 1800 + 2100) / 3; not clipped to [0, 1] like a score's interval
    assert [round(p.get_height(), 3) for p in bars[0].patches] == [1000.0, 1966.667, 2033.333]
    segments = bars[0].errorbar.lines[2][0].get_segments()
    lo, hi = segments[1][0][1], segments[1][1][1]
    assert lo < 1966.667 < hi and hi > 2000
    priced = tuple(replace(r, spend_by_iteration=(0.01, 0.02, 0.03), dollars=0.06) for r in GPT)
    fig = figures.figure(report(gpt=priced), "spend")
    (ax,) = _axes(fig)
    assert ax.get_ylabel().startswith("dollars per run")
    bars = [c for c in ax.containers if type(c).__name__ == "BarContainer"]
    assert [round(p.get_height(), 6) for p in bars[0].patches] == [0.01, 0.02, 0.03]


@pytest.mark.parametrize("name", figures.NAMES)
def test_svg_is_the_stored_one(name):
    """Byte for byte (a fixed hash salt, no date, no path): drawn in this process, stored by another."""
    svg = figures.render(report(), name, "svg")
    stored = STORED / f"{name}.svg"
    if os.environ.get("STOP_TUI_UPDATE_FIGURES") == "1":
        STORED.mkdir(exist_ok=True)
        stored.write_bytes(svg)
    assert stored.exists(), f"no {stored}: run with STOP_TUI_UPDATE_FIGURES=1 once, and look at it"
    assert svg == stored.read_bytes()
    assert b"<dc:date>" not in svg and b"/nowhere" not in svg and str(ROOT).encode() not in svg


def test_svg_changes_with_the_data_and_only_the_figure_of_it():
    before = {name: figures.render(report(), name, "svg") for name in figures.NAMES}
    moved = (replace(GPT[0], val=(0.50, 0.60, 0.90)), *GPT[1:])
    after = {name: figures.render(report(gpt=moved), name, "svg") for name in figures.NAMES}
    assert after["curve"] != before["curve"]
    assert after["transfer"] == before["transfer"] and after["spend"] == before["spend"]
    assert figures.render(report(), "curve", "svg") == before["curve"]  # the same data: the same bytes


def test_labels_are_text_in_the_svg():
    svg = figures.render(report(), "curve", "svg").decode()
    assert "gpt: 3 runs, 2 gained ≥ 3 pts" in svg and "sw: self-improvement over iterations" in svg


def test_svg_element_is_the_svg_alone_for_an_html_page():
    element = figures.svg_element(report(), "spend")
    assert element.startswith('<svg ') and 'id="stop-tui-spend"' in element.split(">", 1)[0]
    assert element.rstrip().endswith("</svg>") and "<?xml" not in element and "<!DOCTYPE" not in element


def test_one_panel_per_task_and_per_transfer_source():
    sat = tuple(replace(r, session=r.session.replace("lpn", "sat")) for r in GPT)
    two = Report(title="two", groups=(*report().groups, group("sat", "gpt", "quick", sat)),
                 transfer={**TRANSFER, ("sat", "gpt"): TRANSFER[("lpn", "gpt")][:1]})
    assert [ax.get_title() for ax in _axes(figures.figure(two, "curve"))] == ["lpn", "sat"]
    assert [ax.get_title() for ax in _axes(figures.figure(two, "transfer"))] == [
        "the lpn improver of gpt on other tasks", "the sat improver of gpt on other tasks"]
    (ax,) = _axes(figures.figure(two, "spend"))  # one panel, the task in the label
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "lpn · gpt (3 runs)", "lpn · other (2 runs)", "sat · gpt (3 runs)"]


def test_png_for_slides():
    png = figures.render(report(), "transfer", "png")
    assert png.startswith(b"\x89PNG\r\n\x1a\n")


def test_a_figure_without_data_says_so():
    empty = report(transfer={})
    assert figures.available(empty) == ("curve", "spend")
    svg = figures.render(empty, "transfer", "svg").decode()
    assert "no transfer sessions in this report" in svg


def test_write_several_figures_by_stem_or_one_by_name(tmp_path):
    written = figures.write(report(transfer={}), tmp_path / "fig.svg")
    assert written == [tmp_path / "fig-curve.svg", tmp_path / "fig-spend.svg"]
    assert all(p.read_bytes().startswith(b"<?xml") for p in written)
    assert figures.write(report(), tmp_path / "transfer.png") == [tmp_path / "transfer.png"]
    assert figures.write(report(), tmp_path / "sw-curve.svg") == [tmp_path / "sw-curve.svg"]
    assert (tmp_path / "sw-curve.svg").read_bytes() == figures.render(report(), "curve", "svg")


@pytest.mark.parametrize(("name", "message"), [
    ("fig.pdf", "a figure file ends in .svg or .png"),
    ("transfer.svg", "nothing to draw for the transfer figure (no transfer sessions in this report)"),
])
def test_write_refuses_what_it_cannot_draw(tmp_path, name, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        figures.write(report(transfer={}), tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_write_to_a_folder_that_does_not_exist_is_one_line(tmp_path):
    with pytest.raises(UserError, match=r"cannot write .*fig-curve.svg: No such file or directory"):
        figures.write(report(), tmp_path / "missing" / "fig.svg")


def test_render_refuses_unknown_names():
    with pytest.raises(UserError, match="no figure 'bars'"):
        figures.render(report(), "bars", "svg")
    with pytest.raises(UserError, match="not 'pdf'"):
        figures.render(report(), "curve", "pdf")


def test_without_matplotlib_the_error_says_how_to_install_it():
    """matplotlib is imported only when a figure is drawn; without it: PlotsUnavailable, a
    UserError (exit 2) naming the extra."""
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from stop_tui.engine.report import figures\n"
        "from stop_tui.engine.report.model import Report\n"
        "from stop_tui.engine.errors import UserError\n"
        "assert 'matplotlib' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "try:\n"
        "    figures.render(Report(title='x', groups=()), 'curve', 'svg')\n"
        "except figures.PlotsUnavailable as exc:\n"
        "    assert isinstance(exc, UserError)\n"
        "    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ("figures need matplotlib, which is not installed: install it: "
                                   "pip install 'stop-tui[plots]'")


def test_importing_figures_does_not_import_matplotlib():
    code = ("import sys\nfrom stop_tui.engine.report import figures\n"
            "print('matplotlib' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          timeout=60)
    assert done.stdout.strip() == "False", done.stderr
