"""`stop-tui export`: a real session (two quick iterations on the scripted LM server, killed
with -9 while scoring and resumed, so its log holds superseded events) exported through the CLI
as a user would. Round trips: every JSONL line parses to the stored event (superseded ones
marked), every program file equals the store's text; the CSV's candidates, the Markdown
report and the JSON summary against the session's own record; bad input is one line, exit 2."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from lm_helpers import (
    events_of,
    kill9,
    kinds_in_log,
    only_session,
    responder,
    run_args,
    session_files,
    start,
    stop_tui,
    wait_for,
)
from scripted_server import ScriptedLMServer

from stop_tui.engine import events as ev
from stop_tui.engine.errors import UserError
from stop_tui.engine.export import markdown, program_file
from stop_tui.engine.history import History
from stop_tui.engine.resume import effective, is_superseded, superseded_ranges
from stop_tui.engine.store import SessionStore


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> tuple[Path, str]:
    """(sessions dir, id) of a 2-iteration quick session killed -9 while iteration 0 or 1 was
    scoring, then resumed to its end."""
    folder = tmp_path_factory.mktemp("export")
    with ScriptedLMServer(responder, honour_n=False, latency=0.1) as server:
        proc = start(*run_args(server, folder, "--iterations", "2", "--json"))

        def scoring() -> bool:
            seen = kinds_in_log(folder)
            return seen[ev.RUN_STARTED] >= 2 and seen[ev.SOLUTION_SCORED] >= 3

        assert wait_for(lambda: scoring() or proc.poll() is not None, timeout=120)
        assert proc.poll() is None, "the run ended before the kill point"
        kill9(proc)
        sid = only_session(folder)
        done = stop_tui("run", "--resume", sid, "--sessions-dir", str(folder), "--json")
        assert done.returncode == 0, done.stderr
    return folder, sid


def export(folder: Path, sid: str, *args: str):
    return stop_tui("export", sid, "--sessions-dir", str(folder), *args)


def test_jsonl_is_every_event_in_order_with_superseded_ones_marked(session):
    folder, sid = session
    done = export(folder, sid, "--format", "jsonl")
    assert done.returncode == 0, done.stderr
    stored = events_of(folder, sid)
    lines = done.stdout.splitlines()
    assert len(lines) == len(stored)
    ranges = superseded_ranges(stored)
    assert ranges, "the fixture's resume superseded nothing"
    marked = 0
    for line, event in zip(lines, stored, strict=True):
        record = json.loads(line)
        assert ev.Event.from_dict(record) == event
        assert record["superseded"] is is_superseded(event, ranges)
        marked += record["superseded"]
    assert marked == len(stored) - len(effective(stored)) > 0


def test_every_program_is_a_file_named_by_its_node_path(session, tmp_path):
    folder, sid = session
    out = tmp_path / "programs"
    done = export(folder, sid, "--programs", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""  # --programs alone: only the files
    events = effective(events_of(folder, sid))
    expected = {e.path: e.data["source"] for e in events
                if e.kind in (ev.CANDIDATE_PROPOSED, ev.SOLUTION_SCORED) and e.data.get("source")}
    files = {p.relative_to(out).with_suffix("").as_posix(): p for p in out.rglob("*.py")}
    assert set(files) == set(expected)
    assert {"it0/check", "it1/c1", "it1/check", "it2/c1", "it1/c1/r1/final"} <= set(files)
    assert len(expected) > 1 and done.stderr.strip() == f"wrote {len(expected)} programs to {out}"
    store = SessionStore.open(folder, sid, readonly=True)
    try:
        for path, digest in expected.items():
            text = files[path].read_bytes().decode("utf-8", "surrogatepass")
            assert text == store.text(digest), path
        seed = store.text(History.read(store).held_improver(0))
    finally:
        store.close()
    assert (out / "it0" / "check.py").read_text() == seed


def test_csv_lists_the_candidates_with_their_parents_scores_and_tokens(session):
    folder, sid = session
    done = export(folder, sid, "--format", "csv")
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert list(rows[0]) == ["path", "role", "parent_path", "val", "test", "error", "lm_tokens"]
    events = effective(events_of(folder, sid))
    proposed = [e for e in events if e.kind == ev.CANDIDATE_PROPOSED]
    assert [r["path"] for r in rows] == [e.path for e in proposed]
    scored = {e.path: e.data for e in events if e.kind == ev.CANDIDATE_SCORED}
    by_path = {r["path"]: r for r in rows}
    for path, data in scored.items():
        assert float(by_path[path]["val"]) == data["score"]
        assert by_path[path]["test"] == ("" if data.get("test") is None else repr(float(data["test"])))
    assert by_path["it0/check"]["role"] == "seed" and by_path["it0/check"]["parent_path"] == ""
    assert by_path["it1/c1"]["role"] == "candidate" and by_path["it1/c1"]["parent_path"] == "it0/check"
    assert by_path["it1/check"]["role"] == "check"
    # iteration 2's improver is the one held after iteration 1: its check node if accepted
    accepted_1 = any(e.kind == ev.ITERATION_ACCEPTED and e.data["iteration"] == 1 for e in events)
    assert by_path["it2/c1"]["parent_path"] == ("it1/check" if accepted_1 else "it0/check")
    # tokens: every LM reply under the candidate's node (its meta-utility runs' calls)
    for path in ("it1/c1", "it0/check"):
        spent = sum(e.data["prompt_tokens"] + e.data["completion_tokens"] for e in events
                    if e.kind == ev.LM_REPLY and e.path.startswith(path + "/"))
        assert int(by_path[path]["lm_tokens"]) == spent > 0


def test_json_is_the_summary_show_prints(session, tmp_path):
    folder, sid = session
    out = tmp_path / "summary.json"
    done = export(folder, sid, "--out", str(out))  # json is the default
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    shown = json.loads(stop_tui("show", sid, "--sessions-dir", str(folder), "--json").stdout)
    shown.pop("holder")
    assert json.loads(out.read_text()) == shown


def test_md_report_has_the_curve_the_accepted_diffs_and_the_spend(session):
    folder, sid = session
    done = export(folder, sid, "--format", "md")
    assert done.returncode == 0, done.stderr
    md = done.stdout
    s = json.loads(stop_tui("show", sid, "--sessions-dir", str(folder), "--json").stdout)
    assert md.startswith(f"# Session {sid}\n")
    assert f"| 0 | {s['seed_meta_utility']:.4f} | {s['seed_meta_utility_test']:.4f} | seed improver |" in md
    for row in s["iterations"][1:]:
        verdict = "accepted" if row["accepted"] else "rejected: "
        assert f"| {row['iteration']} | {row['val']:.4f} | {row['test']:.4f} | {verdict}" in md
    assert "### T=0: the seed improver" in md and "def improve_algorithm" in md
    for row in s["iterations"][1:]:
        if row["accepted"]:  # the scripted improvers differ from the seed by a "# variant" line
            section = md.split(f"### T={row['iteration']}: accepted", 1)[1].split("###", 1)[0]
            assert "```diff\n--- previous improver\n+++ T=" in section
            assert "\n+# variant " in section
    lm = s["lm"]
    assert f"{lm['calls']} calls, {lm['prompt_tokens'] + lm['completion_tokens']} tokens" in md
    assert "no price known for this model in total" in md  # the scripted model has no price
    spend = md.split("| T | calls | tokens | dollars |\n|---|---|---|---|\n", 1)[1].splitlines()
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in spend]
    assert [c[0] for c in cells] == [str(t) for t in range(len(s["iterations"]))]
    assert sum(int(c[1]) for c in cells) == lm["calls"]
    assert sum(int(c[2]) for c in cells) == lm["prompt_tokens"] + lm["completion_tokens"]
    assert {c[3] for c in cells} == {"-"}


def test_out_file_holds_what_stdout_would_and_the_session_is_untouched(session, tmp_path):
    folder, sid = session
    before = session_files(folder / sid)
    printed = export(folder, sid, "--format", "csv")
    out = tmp_path / "c.csv"
    written = export(folder, sid, "--format", "csv", "--out", str(out))
    assert written.returncode == 0 and out.read_text() == printed.stdout
    assert session_files(folder / sid) == before


@pytest.mark.parametrize(("args", "message"), [
    (("nope",), "no session at"),
    (("{sid}", "--out", "{tmp}/missing/x.json"), "cannot write {tmp}/missing/x.json: No such file or directory"),
    (("{sid}", "--out", "{tmp}"), "cannot write {tmp}: it is a folder"),
    (("{sid}", "--programs", "{tmp}/file"), "cannot write programs to {tmp}/file: it is a file"),
    (("{sid}", "--programs", "{tmp}/file/sub"), "cannot write programs to {tmp}/file/sub: Not a directory"),
])
def test_bad_input_is_one_line_and_exit_2(session, tmp_path, args, message):
    folder, sid = session
    (tmp_path / "file").write_text("")
    fill = {"sid": sid, "tmp": str(tmp_path)}
    done = stop_tui("export", *(a.format(**fill) for a in args), "--sessions-dir", str(folder))
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("stop-tui: error: ")
    assert message.format(**fill) in done.stderr


def test_a_damaged_session_is_one_line_and_exit_2(sessions_dir):
    (sessions_dir / "broken").mkdir()
    (sessions_dir / "broken" / "session.db").write_bytes(b"not a database at all" * 100)
    for fmt in ("json", "jsonl", "csv", "md"):
        done = stop_tui("export", "broken", "--format", fmt, "--sessions-dir", str(sessions_dir))
        assert done.returncode == 2 and done.stdout == ""
        assert done.stderr == "stop-tui: error: session broken is unreadable: not an SQLite database (damaged or not a session)\n"


def test_a_sweep_or_a_transfer_session_is_refused_where_it_does_not_fit(sessions_dir):
    (sessions_dir / "sw").mkdir()
    (sessions_dir / "sw" / "sweep.json").write_text("{}")
    done = stop_tui("export", "sw", "--sessions-dir", str(sessions_dir))
    assert done.returncode == 2 and "sw is a sweep: export one of its runs" in done.stderr
    store = SessionStore.create(sessions_dir, {"task": "grid,mqa", "kind": "transfer", "model": "m"}, name="tr")
    store.close()
    md = stop_tui("export", "tr", "--format", "md", "--sessions-dir", str(sessions_dir))
    assert md.returncode == 2 and "tr is a transfer session: --format md reports a STOP run" in md.stderr
    js = stop_tui("export", "tr", "--format", "jsonl", "--sessions-dir", str(sessions_dir))
    assert js.returncode == 0 and js.stdout == ""


def test_md_fences_hold_any_program_and_escape_terminal_controls(sessions_dir):
    """An LM-written improver with a code fence and an ESC sequence inside."""
    store = SessionStore.create(sessions_dir, {"task": "lpn", "model": "m", "settings": {"seed": 0}}, name="s")
    try:
        seed = "def improve_algorithm(s, u, lm):\n    return s\n"
        hostile = seed + '    """```\n\x1b[2J"""\n'
        a, b = store.put_text(seed), store.put_text(hostile)
        for payload, path in [
            (ev.IterationStarted(iteration=0, improver=a), "it0"),
            (ev.IterationAccepted(iteration=0, improver=a, val=0.5, test=0.4), "it0"),
            (ev.IterationStarted(iteration=1, improver=a), "it1"),
            (ev.IterationAccepted(iteration=1, improver=b, val=0.6, test=0.5), "it1"),
        ]:
            store.append(ev.event(payload, path))
        md = markdown(store)
    finally:
        store.close()
    assert "\x1b" not in md and "\\x1b[2J" in md
    section = md.split("### T=1: accepted (val 0.6000, test 0.5000)", 1)[1]
    assert section.lstrip().startswith("````diff\n")  # a fence longer than the ``` inside
    assert "| 1 | 0.6000 | 0.5000 | accepted |" in md


def test_node_paths_cannot_climb_out_of_the_programs_folder(tmp_path):
    assert program_file(tmp_path, "it2/c3") == tmp_path / "it2" / "c3.py"
    for bad in ("../x", "it1/../../x", "/abs", "it1//c1", ""):
        with pytest.raises(UserError, match="cannot name a file after the node path"):
            program_file(tmp_path, bad)


def test_export_imports_neither_textual_nor_matplotlib(session):
    folder, sid = session
    code = ("import sys, io, contextlib\nimport stop_tui.cli as cli\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    assert cli.main(['export', {sid!r}, '--format', 'md', '--sessions-dir', {str(folder)!r}]) == 0\n"
            "print(' '.join(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    mods = done.stdout.split()
    assert "stop_tui.engine.export" in mods
    assert "textual" not in mods and "matplotlib" not in mods


def test_a_sweeps_run_is_exported_by_sweep_slash_run(session, tmp_path):
    from sweep_helpers import new_sweep, place

    folder, sid = session
    sessions = tmp_path / "sessions"
    sweep = new_sweep(sessions, models=("scripted",), seeds=(0, 1))
    first, second = sweep.spec.runs()
    place(folder / sid, sweep, first)
    done = stop_tui("export", f"sw/{first.name}", "--sessions-dir", str(sessions))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["session"] == first.name
    waiting = stop_tui("export", f"sw/{second.name}", "--sessions-dir", str(sessions))
    assert waiting.returncode == 2
    assert f"run {second.name} of sweep sw has not started yet" in waiting.stderr


def test_a_running_session_can_be_exported(tmp_path):
    """Read-only: the writer holds the session and keeps appending while it is exported."""
    with ScriptedLMServer(responder, latency=0.5) as server:  # 9 calls: seconds of running left
        proc = start(*run_args(server, tmp_path, "--json"))
        try:
            assert wait_for(lambda: kinds_in_log(tmp_path)[ev.LM_REPLY] >= 1 or proc.poll() is not None)
            assert proc.poll() is None, "the run ended before it was exported"
            sid = only_session(tmp_path)
            done = export(tmp_path, sid, "--format", "jsonl")
            running = proc.poll() is None
        finally:
            kill9(proc)
    assert done.returncode == 0, done.stderr
    assert running
    seqs = [json.loads(line)["seq"] for line in done.stdout.splitlines()]
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) > 3
