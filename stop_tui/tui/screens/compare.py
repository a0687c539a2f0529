"""Compare sessions in the TUI ("sessions: compare" in the palette, `c` anywhere; `c` on a
sweep's table compares its marked runs): Scores overlays the runs' curves with each group's
95 % interval band (widgets/compare_chart.py), a table lists the runs, enter opens one.

`ComparePickScreen` lists the STOP sessions of a folder (and its sweeps' runs); space marks,
`c` compares the marked. `CompareScreen` follows the compared sessions as their logs grow: a
thread worker asks engine/report/live.LiveRuns every POLL_SECONDS (it stats each `session.db`
and `-wal` first and reads only what was committed since) and posts the runs and their groups
when something changed. Enter opens the highlighted run read-only (`CompareRunScreen`, escape
comes back), or goes back to it when it is the session this window shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static
from textual.worker import get_current_worker

from stop_tui.engine.report.live import LiveRun, LiveRuns, groups, sessions_in
from stop_tui.engine.untrusted import printable
from stop_tui.tui.actions import COMPARE, COMPARE_PICK, COMPARE_RUN, COMPARE_TABLE, bindings
from stop_tui.tui.follow import Holder
from stop_tui.tui.messages import CompareRuns
from stop_tui.tui.palette import palette
from stop_tui.tui.screens.main import MainScreen
from stop_tui.tui.screens.sweep import RunsTable
from stop_tui.tui.widgets.compare_chart import BY_GROUP, BY_SESSION, CompareChart

POLL_SECONDS = 0.5
COLUMNS = ("run", "group", "state", "iter", "T=0", "final", "test", "gain", "best", "calls", "tokens",
           "cost", "note")
PICK_COLUMNS = ("mark", "session", "task", "model", "preset", "state", "iter", "best")
MARK = "✓"


def _num(x: float | None) -> str:
    return f"{x:.4f}" if x is not None else "-"


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def state_of(run: LiveRun) -> str:
    """running (a process holds it and its log has not finished: a workbench that has a
    finished session open holds it too), failed (an error ended it), interrupted (it stopped
    mid-iteration), else the log's state (new, paused, finished) or unreadable."""
    row = run.row
    if run.holder is not None and row.state != "finished":
        return "running"
    if row.state == "unreadable":
        return "unreadable"
    if row.failed:
        return "failed"
    return "interrupted" if row.state == "running" else row.state


def iterations(run: LiveRun) -> str:
    done = max(0, len(run.row.val) - 1)
    return f"{done}/{run.planned if run.planned is not None else '-'}"


def note(run: LiveRun) -> str:
    if run.holder is not None:
        who = Holder.from_record(run.holder)
        return who.describe() if who is not None else ""
    return printable(run.row.failed.strip().splitlines()[0]) if run.row.failed and run.row.failed.strip() else ""


def _group_label(run: LiveRun) -> str:
    task, model, preset = run.key
    return f"{task} · {model}" + (f" · {preset}" if preset else "")


def cells(run: LiveRun, colour: str, c: dict[str, str]) -> dict[str, str | Text]:
    row = run.row
    state = state_of(run)
    style = {"running": c["success"], "finished": c["primary"], "paused": c["warning"],
             "interrupted": c["warning"], "failed": c["error"], "unreadable": c["error"]}
    final_test = row.test[row.final_t] if row.final_t is not None and row.final_t < len(row.test) else None
    name = Text.assemble(("■ ", colour), row.session)
    return {"run": name, "group": _group_label(run), "state": Text(state, style=style.get(state, c["muted"])),
            "iter": iterations(run), "T=0": _num(row.val[0] if row.val else None), "final": _num(row.final_val),
            "test": _num(final_test), "gain": f"{row.gain:+.4f}" if row.gain is not None else "-",
            "best": f"{_num(row.best_val)}@{row.best_t}" if row.best_t is not None else "-",
            "calls": str(row.calls), "tokens": str(row.tokens), "cost": f"${row.dollars:.4f}", "note": note(run)}


class CompareTable(RunsTable):
    BINDINGS = bindings(COMPARE_TABLE)


class CompareScreen(Screen[None]):
    HELP = """\
## Compare

**Scores**: each run's meta-utility û after iterations t = 0..N (t = 0: the seed improver),
overlaid (─ ╱ ╲ lines, • points); behind them each group's 95 % interval over its runs
(shaded) and its mean (◆). A group is the runs of one task, model and preset. Beside the
chart: each group's mean and interval per t, and how many runs gained at least 3 points over
t = 0 (the paper's "3 of 25"). `{key:compare.split}` switches val / test,
`{key:compare.colour}` colours by group or by session.

**Runs**: one row per session, kept current as their logs grow (a running session's curve
grows on screen). `{key:compare.open}` opens the highlighted run read-only (escape comes back);
`{key:compare.back}` goes back to where compare was opened.
"""

    BINDINGS = bindings(COMPARE)

    def __init__(self, sessions: Sequence[tuple[str, Path]], title: str) -> None:
        super().__init__()
        self.sessions = [(name, Path(folder)) for name, folder in sessions]
        self.title_text = title
        self.runs: tuple[LiveRun, ...] = ()
        self.groups: tuple = ()

    def compose(self) -> ComposeResult:
        yield Static(f" Compare · {self.title_text} · reading…", id="compare-title", markup=False)
        yield CompareChart(id="compare-chart")
        yield CompareTable(id="compare-table", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(CompareTable)
        table.border_title = "Runs"
        for col in COLUMNS:
            table.add_column(col, key=col)
        table.focus()
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self.show(self.runs, self.groups, recolor=True))
        self._poll()

    @work(thread=True, exclusive=True, exit_on_error=False, group="compare", name="compare")
    def _poll(self) -> None:
        worker = get_current_worker()
        reader = LiveRuns(self.sessions)
        seen: tuple[LiveRun, ...] | None = None
        while not worker.is_cancelled:
            runs = reader.read()
            if runs != seen:
                seen = runs
                self.post_message(CompareRuns(runs, groups(runs)))
            worker.cancelled_event.wait(POLL_SECONDS)

    def on_compare_runs(self, message: CompareRuns) -> None:
        self.show(message.runs, message.groups)

    def show(self, runs: tuple[LiveRun, ...], groups_: tuple, *, recolor: bool = False) -> None:
        """Draw the runs: the chart, new rows added, changed cells updated (the cursor stays);
        `recolor`: every coloured cell drawn again (a new theme, or colours by group/session)."""
        self.runs, self.groups = runs, groups_
        chart = self.query_one(CompareChart)
        chart.show(runs, groups_)
        colours = chart.colours()
        c = palette(self.app)
        table = self.query_one(CompareTable)
        for run in runs:
            values = cells(run, colours.runs.get(run.row.session, c["muted"]), c)
            key = run.row.session
            if key not in table.rows:
                table.add_row(*(values[col] for col in COLUMNS), key=key)
                continue
            for col in COLUMNS:
                if recolor or str(table.get_cell(key, col)) != str(values[col]):
                    table.update_cell(key, col, values[col], update_width=True)
        live = sum(1 for r in runs if r.holder is not None)
        self.query_one("#compare-title", Static).update(
            f" Compare · {self.title_text} · {_count(len(runs), 'session')} in {_count(len(groups_), 'group')}"
            + (f" · {live} running" if live else ""))

    def highlighted(self) -> LiveRun | None:
        row = self.query_one(CompareTable).cursor_row
        return self.runs[row] if self.runs and row is not None and 0 <= row < len(self.runs) else None

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        run = self.highlighted()
        if run is not None:
            self.app.open_compared(Path(run.row.folder), run.row.session)

    def action_back(self) -> None:
        self.dismiss()

    def action_split(self) -> None:
        chart = self.query_one(CompareChart)
        chart.set_split("test" if chart.split == "val" else "val")

    def action_colour(self) -> None:
        chart = self.query_one(CompareChart)
        chart.set_by(BY_SESSION if chart.by == BY_GROUP else BY_GROUP)
        self.show(self.runs, self.groups, recolor=True)
        self.notify(f"colours: one per {chart.by}", timeout=2)


class CompareRunScreen(MainScreen):
    """A compared run in the session view; escape goes back to the comparison."""

    BINDINGS = bindings(COMPARE_RUN)


class ComparePickScreen(Screen[None]):
    """The STOP sessions of a folder (and its sweeps' runs): space marks, `c` compares."""

    BINDINGS = bindings(COMPARE_PICK)

    def __init__(self, folder: Path, marked: Sequence[Path] = ()) -> None:
        super().__init__()
        self.folder = Path(folder)
        self.marked = {Path(p).resolve() for p in marked}
        self.runs: tuple[LiveRun, ...] = ()

    def compose(self) -> ComposeResult:
        yield Static(f" Compare: mark sessions in {self.folder} (space), then c", id="compare-title", markup=False)
        yield DataTable(id="compare-pick", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.border_title = "Sessions"
        for col in PICK_COLUMNS:
            table.add_column(" " if col == "mark" else col, key=col)
        table.focus()
        self._read()

    @work(thread=True, exclusive=True, exit_on_error=False, group="compare-pick", name="compare-pick")
    def _read(self) -> None:
        runs = LiveRuns(sessions_in(self.folder)).read()
        self.post_message(CompareRuns(tuple(r for r in runs if r.kind == "stop"), ()))

    def on_compare_runs(self, message: CompareRuns) -> None:
        self.runs = message.runs
        table = self.query_one(DataTable)
        for run in self.runs:
            row = run.row
            table.add_row(self._mark(run), row.session, run.task or "-", run.model or "-", run.preset or "-",
                          state_of(run), iterations(run), _num(row.best_val), key=row.session)
        if not self.runs:
            self.query_one("#compare-title", Static).update(
                f" No STOP sessions in {self.folder}: start one with `stop-tui new --task lpn`.")

    def _mark(self, run: LiveRun) -> str:
        return MARK if Path(run.row.folder).resolve() in self.marked else " "

    def action_mark(self) -> None:
        table = self.query_one(DataTable)
        row = table.cursor_row
        if not self.runs or row is None or not 0 <= row < len(self.runs):
            return
        run = self.runs[row]
        folder = Path(run.row.folder).resolve()
        self.marked.symmetric_difference_update({folder})
        table.update_cell(run.row.session, "mark", self._mark(run))
        if row < len(self.runs) - 1:
            table.move_cursor(row=row + 1)

    def action_compare(self) -> None:
        chosen = [(r.row.session, Path(r.row.folder)) for r in self.runs if Path(r.row.folder).resolve() in self.marked]
        if not chosen:
            self.notify("Mark the sessions to compare first (space).", severity="warning", timeout=4)
            return
        self.app.compare(chosen, self.folder.name)

    def action_back(self) -> None:
        self.dismiss()
