"""The console script's quick exit (cli.entry): what a command printed is all there, the exit
code is the command's, the exit handlers run, and a thread still at work is waited for."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def entry(code: str, *argv: str) -> subprocess.CompletedProcess:
    script = textwrap.dedent(code) + f"\nimport sys\nsys.argv = ['stop-tui', *{list(argv)!r}]\n" \
        "from stop_tui.cli import entry\nentry()\n"
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


def test_output_exit_code_and_exit_handlers() -> None:
    done = entry("import atexit, sys\natexit.register(lambda: print('handler ran', file=sys.stderr))\n",
                 "tasks")
    assert done.returncode == 0, done.stderr
    assert "lpn" in done.stdout and done.stdout.endswith("\n")
    assert "handler ran" in done.stderr
    refused = entry("", "score", "--task", "no-such-task", "x.py")
    assert refused.returncode == 2
    assert "stop-tui: error: unknown task 'no-such-task'" in refused.stderr


def test_a_thread_at_work_is_waited_for(tmp_path: Path) -> None:
    marker = tmp_path / "written"
    done = entry(f"""
        import threading, time
        from pathlib import Path
        def later():
            time.sleep(0.5)
            Path({str(marker)!r}).write_text("done")
        threading.Thread(target=later).start()
        """, "tasks")
    assert done.returncode == 0, done.stderr
    assert marker.read_text() == "done"


def test_python_m_and_the_console_script_use_it() -> None:
    assert (ROOT / "stop_tui" / "__main__.py").read_text().strip().endswith("entry()")
    assert 'stop-tui = "stop_tui.cli:entry"' in (ROOT / "pyproject.toml").read_text()
