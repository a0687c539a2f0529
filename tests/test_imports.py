"""The engine and `stop-tui run` never import Textual (checked in fresh interpreters)."""

import subprocess
import sys

from conftest import ROOT


def _modules_after(code: str) -> str:
    probe = code + "\nimport sys\nprint(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True)
    return out.stdout


def test_engine_does_not_import_textual():
    mods = _modules_after(
        "import pkgutil, importlib, stop_tui.engine as e\n"
        "for m in pkgutil.walk_packages(e.__path__, 'stop_tui.engine.'):\n"
        "    importlib.import_module(m.name)\n"
        "import stop_tui.progress, stop_tui.cli")
    assert "stop_tui.engine.loop" in mods.split()
    assert "textual" not in mods.split()


def test_run_command_does_not_import_textual(tmp_path):
    code = (
                "import stop_tui.cli as cli\n"
        "rc = cli.main(['run', '--task', 'lpn', '--model', 'm', '--base-url', 'http://127.0.0.1:9/v1',\n"
        f"              '--sessions-dir', r'{tmp_path}'])\n"
        "assert rc == 3, rc\n")
    mods = _modules_after(code).split()
    # It got as far as running the engine and asking the (unreachable) server, which paused it.
    assert "stop_tui.engine.loop" in mods and "openai" in mods
    assert "textual" not in mods
