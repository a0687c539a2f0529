"""`stop-tui sweep` refuses bad input with one line and exit 2, before anything starts: no sweep
folder, no session, no request to the LM server."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from lm_helpers import cli_env, responder
from ray_helpers import ROOT, ray_local  # noqa: F401 - the module's Ray instance
from scripted_server import ScriptedLMServer

from stop_tui.cli import main


@pytest.fixture(scope="module")
def server():
    with ScriptedLMServer(responder, models=["a", "b"]) as s:
        yield s


@pytest.fixture
def cli(capsys):
    """`stop-tui ARGS` in this process (nothing here starts a session): its exit code and output."""
    def run(*args: str) -> subprocess.CompletedProcess:
        code = main(list(args))
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)

    return run


@pytest.fixture
def sweep(cli, server):
    def run(sessions, *extra: str, url: str | None = None) -> subprocess.CompletedProcess:
        return cli("sweep", "--task", "lpn", "--model", "a", "--seeds", "0-1", "--preset", "quick",
                   "--base-url", url or server.base_url, "--sessions-dir", str(sessions), *extra)

    return run


def refused(done: subprocess.CompletedProcess, words: str) -> str:
    """The one error line (Ray may print its own notices above it)."""
    assert done.returncode == 2, (done.returncode, done.stderr)
    errors = [line for line in done.stderr.splitlines() if line.startswith("stop-tui: error:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    assert words in errors[0], errors[0]
    return errors[0]


def nothing_started(sessions, server) -> None:
    assert not sessions.exists() or not any(sessions.iterdir()), list(sessions.iterdir())
    assert server.requests == []


@pytest.mark.parametrize(("extra", "words"), [
    (("--seeds", "5-3"), "names no seed"),
    (("--seeds", "x"), "is not a seed or a range"),
    (("--task", "nope"), "nope"),
    (("--transfer", "meta"), "not a downstream task"),
    (("--model", "a,zzz"), "unknown model 'zzz'"),
    (("--max-parallel", "0"), "--max-parallel must be 1 or more"),
    (("--requests-per-endpoint", "0"), "--requests-per-endpoint must be 1 or more"),
    (("--iterations", "-1"), "--iterations must be 0 or more"),
    (("--max-cost", "1"), "needs a price for 'a'"),
])
def test_bad_input_is_one_line_and_nothing_starts(sweep, server, tmp_path, extra, words):
    sessions = tmp_path / "sessions"
    refused(sweep(sessions, *extra), words)
    nothing_started(sessions, server)


def dead_address() -> str:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def test_a_ray_address_that_does_not_answer(sweep, server, tmp_path):
    sessions = tmp_path / "sessions"
    refused(sweep(sessions, "--ray-address", dead_address()), "does not answer")
    nothing_started(sessions, server)


def test_a_server_that_serves_any_name_is_not_asked_to_list_it(sweep, tmp_path):
    """llama.cpp's server lists one model and serves any name: a name it does not list passes
    the model check (here the sweep then stops at the Ray address)."""
    with ScriptedLMServer(responder, models=["loaded.gguf"], any_model=True) as llama:
        sessions = tmp_path / "sessions"
        refused(sweep(sessions, "--model", "qwen", "--ray-address", dead_address(), url=llama.base_url),
                "does not answer")
        nothing_started(sessions, llama)


def test_without_ray_it_says_how_to_install_it(sweep, server, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if it were not installed
    sessions = tmp_path / "sessions"
    assert "pip install 'stop-tui[ray]'" in refused(sweep(sessions), "Ray")
    nothing_started(sessions, server)


def test_resume_refuses_what_defines_a_sweep_and_an_unknown_one(cli, server, tmp_path):
    sessions = tmp_path / "sessions"
    refused(cli("sweep", "--resume", "nope", "--sessions-dir", str(sessions)), "no sweep at")
    refused(cli("sweep", "--resume", "nope", "--seeds", "3", "--sessions-dir", str(sessions)),
            "--seeds: --resume continues the sweep as it was asked")
    nothing_started(sessions, server)


def test_a_sessions_dir_the_cluster_does_not_see(server, tmp_path, ray_local):  # noqa: F811
    """The driver sees its sessions dir on a private mount (bubblewrap's tmpfs), the cluster's
    workers do not: the storage check says so."""
    sessions = tmp_path / "private"
    sessions.mkdir()
    bwrap = ["bwrap", "--dev-bind", "/", "/", "--tmpfs", str(sessions), "--"]
    if subprocess.run([*bwrap, "true"], capture_output=True).returncode != 0:
        pytest.skip("bubblewrap cannot make a private mount here")
    done = subprocess.run([*bwrap, sys.executable, "-m", "stop_tui", "sweep", "--model", "a", "--preset", "quick",
                           "--base-url", server.base_url, "--sessions-dir", str(sessions),
                           "--ray-address", ray_local.address],
                          capture_output=True, text=True, env=cli_env(), cwd=ROOT, timeout=300)
    refused(done, "is not shared with Ray node")
    nothing_started(sessions, server)


def test_a_cluster_without_the_endpoint_resource_is_told_how_to_declare_it(sweep, server, tmp_path,
                                                                          ray_local):  # noqa: F811
    sessions = tmp_path / "sessions"
    line = refused(sweep(sessions, "--requests-per-endpoint", "2", "--ray-address", ray_local.address),
                   "the Ray cluster has no resource 'lm:127.0.0.1:")
    assert "ray start ... --resources=" in line
    nothing_started(sessions, server)
