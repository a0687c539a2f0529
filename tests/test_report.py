"""`stop-tui report` on a real sweep (report_helpers.py: runs whose curves the test chose, on
the scripted LM server): the curve's means and 95 % intervals, the gain counts, the transfer
table over the runs' improvers, the safety table summed over runs, spend against what the
server billed, failed and unstarted runs; and the same through the command line in each format."""

from __future__ import annotations

import csv
import html
import io
import json
import math
import statistics
import sys

import pytest
from conftest import stop_tui
from lm_helpers import events_of, session_files
from report_helpers import (
    BROKEN,
    BROKEN_MESSAGE,
    CURVES,
    FLAGGED,
    ONES,
    TRANSFERS,
    ZEROS,
    build,
    improver_chain,
    responder_for,
)
from scripted_server import ScriptedLMServer
from sweep_helpers import append, new_sweep, place

from stop_tui.cli import main
from stop_tui.engine import events as ev
from stop_tui.engine.audit import audit_session
from stop_tui.engine.lm.prices import cost
from stop_tui.engine.lock import acquire
from stop_tui.engine.report import figures
from stop_tui.engine.report.build import build_report
from stop_tui.engine.report.render import PLOTS_HINT, to_dict, to_html
from stop_tui.engine.stats import wilson
from stop_tui.engine.store import SessionStore
from stop_tui.engine.summary import summarize
from stop_tui.engine.sweep.layout import RunKey

T975 = {2: 12.706, 3: 4.303}  # Student t, two-sided 95 %, for n values (n - 1 degrees of freedom)


def by_hand(values):
    """(mean, lo, hi): the mean and its 95 % Student-t interval, clipped to [0, 1]."""
    n, m = len(values), sum(values) / len(values)
    if n == 1:
        return m, m, m
    half = T975[n] * statistics.stdev(values) / math.sqrt(n)
    return m, max(0.0, m - half), min(1.0, m + half)


def close(interval, values):
    m, lo, hi = by_hand(values)
    assert interval.n == len(values)
    assert interval.mean == pytest.approx(m, abs=1e-12)
    assert interval.lo == pytest.approx(lo, abs=1e-12) and interval.hi == pytest.approx(hi, abs=1e-12)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build(tmp_path_factory.mktemp("report") / "sessions")


@pytest.fixture(scope="module")
def report(built):
    return build_report(built.sessions, ["sw"])


def test_groups_curves_and_gain_counts_are_the_chosen_scores(built, report):
    assert report.title == "sw"
    assert [(g.task, g.model, g.preset) for g in report.groups] == [
        ("lpn", "gpt-3.5-turbo", "quick"), ("lpn", "gpt-4", "quick")]
    gpt35, gpt4 = report.groups
    assert [r.session for r in gpt4.runs] == [built.run_id("gpt-4", s) for s in (0, 1, 2)]
    assert [r.seed for r in gpt4.runs] == [0, 1, 2]
    for t in range(3):
        for split in ("val", "test"):
            letters = [CURVES[("gpt-4", s)][t] for s in (0, 1, 2)]
            close(getattr(gpt4.curve[t], split), [built.score(c, split) for c in letters])
    # gpt-3.5-turbo: seed 2 failed after T=0, so T=1 and T=2 are over two runs
    assert [p.val.n for p in gpt35.curve] == [3, 2, 2]
    close(gpt35.curve[0].val, [built.score(c) for c in "ZOZ"])
    close(gpt35.curve[2].test, [built.score(c, "test") for c in "OZ"])

    z, o, e = (built.score(c) for c in "ZOE")
    assert z - o == pytest.approx(0.005) and e - z > 0.03  # the chosen programs' val scores
    # gained >= 3 points: ZEE and OZE yes, ZOZ no; ZOO (-0.005), OZZ (+0.005), the failed run (0): no
    assert (gpt4.gained, len(gpt4.runs)) == (2, 3) and (gpt35.gained, len(gpt35.runs)) == (0, 3)
    s0, s1, s2 = gpt4.runs
    assert (s0.best_t, s0.best_val, s0.final_t, s0.final_val) == (1, e, 2, e)  # the first of the best
    assert s1.gain == pytest.approx(e - o) and s2.gain == 0.0
    assert (s2.best_t, s2.best_val) == (0, z) and s2.final_val == z
    broken = gpt35.runs[2]
    assert broken.state != "finished" and broken.val == (z,) and BROKEN_MESSAGE in broken.failed
    assert [(sid, BROKEN_MESSAGE in reason) for sid, reason in report.failed] == [(built.run_id(*BROKEN), True)]


def test_transfer_table_is_over_the_runs_improvers(built, report):
    assert list(report.transfer) == [("lpn", "gpt-4")]
    (row,) = report.transfer[("lpn", "gpt-4")]
    assert row.task == "parity"
    runs = sorted(TRANSFERS)  # gpt-4 s0 (final program E, I0 handed O) and s2 (final Z, I0 handed Z)
    close(row.improver, [built.score(CURVES[r][2], "test", "parity") for r in runs])
    close(row.seed_improver, [built.score(TRANSFERS[r], "test", "parity") for r in runs])
    seeds = []  # u(s): each transfer session's recorded test score of the seed solution
    for r in runs:
        scored = [e.payload for e in events_of(built.sweep.folder, built.keys[r].transfer_name)
                  if e.kind == ev.TRANSFER_SCORED and e.payload.who == "seed_solution"]
        seeds.append(scored[0].test)
    close(row.seed_solution, seeds)
    assert row.paper == (0.5, 0.593, 0.817) and "transfer table" in row.paper_source
    assert [t.session for t in report.transfer_sessions] == [built.run_id(*r, transfer=True) for r in runs]


def test_safety_is_summed_over_runs_with_wilson_intervals(built, report):
    audits = {}
    for key in CURVES | {BROKEN: None}:
        store = SessionStore(built.sweep.run_folder(built.keys[key]), readonly=True)
        audits[key] = audit_session(store)
        store.close()
    rows = {(r.kind, r.role, r.model): r for r in report.safety}
    flagged = audits[FLAGGED]["kinds"][0]
    assert flagged["kind"] == "sandbox_disabled" and flagged["improver"]["attempts"] > 0
    assert all(a["kinds"][0]["improver"]["attempts"] == 0 for k, a in audits.items() if k != FLAGGED)
    for role in ("improver", "solution"):
        candidates = sum(a["candidates"][role] for a in audits.values())
        assert candidates > 0
        row = rows[("sandbox_disabled", role, None)]
        attempts = flagged[role]["attempts"]
        assert (row.attempts, row.candidates) == (attempts, candidates)
        assert (row.lo, row.hi) == wilson(attempts, candidates) and row.rate == attempts / candidates
    assert rows[("network", "improver", None)].attempts == 0
    # no run had the sandbox_flag_experiment: not measured, the paper's rate beside it per model
    off = [r for r in report.safety if r.kind == "use_sandbox_off"]
    assert [(r.model, r.candidates, r.paper) for r in off] == [("gpt-3.5-turbo", 0, 0.0012), ("gpt-4", 0, 0.0042)]
    assert "sandbox-circumvention" in off[0].paper_source and "0.42 % gpt-4" in off[0].paper_source


def test_spend_per_run_and_in_total_is_what_the_server_billed(built, report):
    rows = [r for g in report.groups for r in g.runs] + list(report.transfer_sessions)
    assert len(rows) == 8  # six runs, two transfers
    assert report.spend.tokens == sum(r.tokens for r in rows) == built.server_tokens
    dollars = 0.0
    for r in rows:
        store = SessionStore(r.folder, readonly=True)
        s = summarize(store)
        store.close()
        assert r.calls == s["lm"]["calls"] and r.tokens == s["lm"]["prompt_tokens"] + s["lm"]["completion_tokens"]
        dollars += cost(s["model"], s["lm"]["prompt_tokens"], s["lm"]["completion_tokens"])
    assert report.spend.dollars == pytest.approx(dollars) and report.spend.dollars > 0
    assert report.spend.calls == sum(r.calls for r in rows) > 0


def test_sessions_named_one_by_one_and_a_run_not_started(built, tmp_path):
    two = build_report(built.sessions, [built.run_id("gpt-4", 0), built.run_id("gpt-4", 2),
                                        built.run_id("gpt-4", 0, transfer=True)])
    assert two.title == "3 sessions" and [len(g.runs) for g in two.groups] == [2]
    (g,) = two.groups
    close(g.curve[1].val, [built.score(c) for c in "EO"])
    assert [row.improver.n for row in two.transfer[("lpn", "gpt-4")]] == [1]

    other = new_sweep(tmp_path, models=("gpt-4",), seeds=(0, 1), name="half")
    place(built.sweep.run_folder(built.keys[("gpt-4", 0)]), other, RunKey("lpn", "gpt-4", 0))
    half = build_report(tmp_path, ["half"])
    assert [len(g.runs) for g in half.groups] == [1]
    assert half.failed == (("half/lpn-gpt-4-s1", "not started yet"),)


def test_the_command_line_in_each_format(built, report, tmp_path):
    args = ("report", "sw", "--sessions-dir", str(built.sessions))
    as_json = stop_tui(*args, "--format", "json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == json.loads(json.dumps(to_dict(report)))

    md = stop_tui(*args)
    assert md.returncode == 0, md.stderr
    text = md.stdout
    assert text.startswith("# STOP report: sw\n")
    assert "## Self-improvement: lpn · gpt-4 · preset quick" in text
    assert "Runs whose final val rose by at least 3 points over T=0: 2 of 3." in text
    assert "0 of 3 (the paper: 3 of 25 gpt-3.5-turbo runs" in text
    m = report.groups[1].curve[1].val
    assert f"| 1 | {m.mean:.4f} [{m.lo:.4f}, {m.hi:.4f}] |" in text
    assert "## Transfer: the improvers self-improved on lpn with gpt-4" in text
    assert "| parity |" in text and "| 0.5000 | 0.5930 | 0.8170 |" in text
    assert "| sandbox_disabled |" in text and "not measured" in text
    assert f"| total |  | {report.spend.calls} | {report.spend.tokens} | ${report.spend.dollars:.4f} |" in text
    assert BROKEN_MESSAGE in text.split("## Failed")[1]

    out = stop_tui(*args, "--format", "csv", "--out", str(tmp_path / "out"))
    assert out.returncode == 0 and out.stdout == "", out.stderr
    assert "wrote" in out.stderr
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / "report.csv").read_text())))
    curve = {(r["model"], r["t"], r["measure"]): r for r in rows if r["table"] == "curve"}
    got = curve[("gpt-4", "1", "val")]
    assert (float(got["value"]), float(got["lo"]), float(got["hi"]), got["n"]) == (m.mean, m.lo, m.hi, "3")
    gained = [r for r in rows if r["table"] == "gained" and r["model"] == "gpt-4"]
    assert [(r["count"], r["n"]) for r in gained] == [("2", "3")]
    total = [r for r in rows if r["table"] == "spend" and r["session"] == "total" and r["measure"] == "tokens"]
    assert [int(r["value"]) for r in total] == [built.server_tokens]
    assert [r["session"] for r in rows if r["table"] == "failed"] == [built.run_id(*BROKEN)]


def test_a_failed_run_that_was_resumed_is_no_longer_listed(built, tmp_path):
    other = new_sweep(tmp_path, models=("gpt-3.5-turbo",), seeds=(2,), name="again")
    folder = place(built.sweep.run_folder(built.keys[BROKEN]), other, RunKey("lpn", "gpt-3.5-turbo", 2))
    assert [sid for sid, _ in build_report(tmp_path, ["again"]).failed] == ["again/lpn-gpt-3.5-turbo-s2"]
    append(folder, ev.Resumed(iteration=1), ev.Paused(reason="stopped by the user; resume to continue"))
    again = build_report(tmp_path, ["again"])
    assert again.failed == () and again.groups[0].runs[0].state == "paused"


def test_the_html_page_embeds_each_figure(built, report, tmp_path):
    page = to_html(report)
    assert page.startswith("<!DOCTYPE html>") and PLOTS_HINT not in page
    assert page.count("<svg") == len(figures.NAMES)
    for name in figures.NAMES:
        svg = figures.render(report, name, "svg").decode()
        assert svg[svg.find("<svg"):] in page
    assert page == to_html(report)  # the same page every time
    assert "<td>sw/lpn-gpt-4-s0</td>" in page and "<td>RuntimeError: the engine broke at T=1</td>" in page

    proc = stop_tui("report", "sw", "--format", "html", "--out", str(tmp_path / "html"), "--plot",
                    str(tmp_path / "fig.svg"), "--sessions-dir", str(built.sessions))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "html" / "report.html").read_text() == page
    written = sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".svg")
    assert written == sorted(f"fig-{name}.svg" for name in figures.available(report))
    assert all(f"wrote {tmp_path / name}" in proc.stderr for name in written)


def test_without_matplotlib_the_page_says_how_and_plot_refuses(built, report, tmp_path, monkeypatch, capsys):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib: ImportError
    page = to_html(report)
    assert "<svg" not in page and f"<p>{html.escape(PLOTS_HINT)}</p>" in page
    code = main(["report", "sw", "--plot", str(tmp_path / "fig.png"), "--sessions-dir", str(built.sessions)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "pip install 'stop-tui[plots]'" in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_reading_a_sweep_writes_nothing(built, tmp_path):
    with acquire(built.sweep.run_folder(built.keys[("gpt-4", 1)])):  # as if a process ran it now
        before = {p: session_files(p) for p in built.sweep.folder.iterdir() if p.is_dir()}
        proc = stop_tui("report", "sw", "--format", "json", "--sessions-dir", str(built.sessions))
        assert proc.returncode == 0, proc.stderr
        assert {p: session_files(p) for p in built.sweep.folder.iterdir() if p.is_dir()} == before


def test_use_sandbox_off_is_counted_over_the_experiments_runs(built, sessions_dir):
    flagged = improver_chain(ZEROS, ONES).replace("language_model):", "language_model, use_sandbox=False):")
    with ScriptedLMServer(responder_for(ONES, flagged), any_model=True) as server:
        proc = stop_tui("run", "--task", "lpn", "--model", "gpt-4", "--base-url", server.base_url, "--preset",
                        "quick", "--iterations", "1", "--sandbox-flag-experiment", "--sessions-dir",
                        str(sessions_dir), "--json")
    assert proc.returncode == 0, proc.stderr
    session = json.loads(proc.stdout)["session"]
    store = SessionStore(sessions_dir / session, readonly=True)
    audit = audit_session(store)["use_sandbox_off"]
    store.close()
    assert audit["attempts"] > 0
    (off,) = [r for r in build_report(sessions_dir, [session]).safety if r.kind == "use_sandbox_off"]
    assert (off.model, off.attempts, off.candidates) == ("gpt-4", audit["attempts"], audit["candidates"])
    assert (off.lo, off.hi) == wilson(audit["attempts"], audit["candidates"]) and off.paper == 0.0042
    md = stop_tui("report", session, "--sessions-dir", str(sessions_dir)).stdout
    line = next(x for x in md.splitlines() if x.startswith("| gpt-4 |"))
    assert line == (f"| gpt-4 | {off.attempts}/{off.candidates} {100 * off.rate:.2f} % [{100 * off.lo:.2f}, "
                    f"{100 * off.hi:.2f}] | 0.42 % |")

    # with a gpt-4 run that flagged use_sandbox without the experiment: the kind counts both, the
    # experiment's rate only the experiment's run
    other = built.sweep.run_folder(built.keys[FLAGGED])
    both = build_report(sessions_dir, [session, str(other)])
    (off2,) = [r for r in both.safety if r.kind == "use_sandbox_off"]
    assert (off2.attempts, off2.candidates) == (off.attempts, off.candidates)
    store = SessionStore(other, readonly=True)
    plain = audit_session(store)
    store.close()
    (kind,) = [r for r in both.safety if (r.kind, r.role) == ("sandbox_disabled", "improver")]
    assert kind.attempts == off.attempts + plain["kinds"][0]["improver"]["attempts"] > off.attempts
    assert kind.candidates == audit["candidates"] + plain["candidates"]["improver"]


def test_an_unreadable_run_of_a_sweep_is_listed_and_the_rest_reported(built, tmp_path):
    other = new_sweep(tmp_path, models=("gpt-4",), seeds=(0, 1), name="hurt")
    for seed in (0, 1):
        place(built.sweep.run_folder(built.keys[("gpt-4", seed)]), other, RunKey("lpn", "gpt-4", seed))
    (other.folder / "lpn-gpt-4-s1" / "session.db").write_bytes(b"not a database" * 100)
    hurt = build_report(tmp_path, ["hurt"])
    assert [len(g.runs) for g in hurt.groups] == [1]
    ((sid, reason),) = hurt.failed
    assert sid == "hurt/lpn-gpt-4-s1" and reason.startswith("unreadable: ")
    named = stop_tui("report", "hurt/lpn-gpt-4-s1", "--sessions-dir", str(tmp_path))
    assert named.returncode == 2 and named.stderr.startswith("stop-tui: error: session lpn-gpt-4-s1 is unreadable: ")
    assert len(named.stderr.splitlines()) == 1
