"""`stop-tui doctor`: which sandbox protections are active on this machine, checked live.

It starts the sandbox pool (bubblewrap, or the kernel fallback), lists each protection as the
pool reports it, then runs a probe program in the sandbox that tries what a hostile candidate
would (read a planted secret, the home folder and the project, reach a loopback server of the
engine, see or signal the engine, create a user namespace or a SysV shared memory segment) and prints what it could do. Exit
code 1 when a protection is missing or a probe got through, so scripts and CI can insist on the
strongest mode.

It also checks the embedded local model: loads it in its worker process (path, size, load
options), makes one short generation there and reports tokens per second. A model that is not
installed is one line (and not a failure: remote models need none); one that fails to load or
whose worker dies while generating makes the exit code 1.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

PROBE = r'''
import os, socket

def algorithm(secret_name, secret_file, home, project, port, engine_pid):
    out = {}
    out["secret_env"] = os.environ.get(secret_name)
    try:
        with open(secret_file) as f:
            out["secret_file"] = f.read()
    except OSError:
        out["secret_file"] = None
    for key, path in (("home", home), ("project", project)):
        try:
            out[key] = sorted(os.listdir(path))[:50]
        except OSError:
            out[key] = None
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=1)
        s.close()
        out["loopback"] = True
    except OSError:
        out["loopback"] = False
    try:
        os.kill(engine_pid, 0)
        out["engine_visible"] = True
    except OSError:
        out["engine_visible"] = False
    try:  # a SysV shared memory segment (would outlive the run and be visible to others)
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        segment = libc.shmget(0, 1 << 20, 0o1600)
        out["shared_memory"] = segment >= 0
        if segment >= 0:
            libc.shmctl(segment, 0, None)
    except Exception:
        out["shared_memory"] = False
    try:  # a user namespace of its own (last: if it worked, this run is now inside one)
        import ctypes
        out["user_namespace"] = ctypes.CDLL(None, use_errno=True).unshare(0x10000000) == 0
    except Exception:
        out["user_namespace"] = False
    out["uid"] = os.getuid()
    out["cwd"] = os.getcwd()
    return out
'''


def add_parser(sub: Any) -> None:
    p = sub.add_parser("doctor", help="which sandbox protections are active here (checked live)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--model", default="local",
                   help="the local model to check: local (default) or local:PATH.gguf")


def probe() -> dict[str, Any]:
    """Run PROBE in a real sandbox run; returns what it could reach (True/values = leaked)."""
    from stop_tui.engine.sandbox.process import Sandbox

    marker = "stop-tui-doctor-secret"
    with tempfile.TemporaryDirectory(prefix="stop-doctor-") as folder:
        secret = Path(folder) / "secret.txt"
        secret.write_text(marker)
        secret.chmod(0o644)
        Path(folder).chmod(0o755)
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        os.environ["STOP_TUI_DOCTOR_SECRET"] = marker
        try:
            with Sandbox(PROBE, "algorithm") as box:
                if box.load_error:
                    return {"error": box.load_error}
                out = box.call(("STOP_TUI_DOCTOR_SECRET", str(secret), str(Path.home()),
                                str(Path.cwd()), listener.getsockname()[1], os.getpid()), 10.0)
        finally:
            os.environ.pop("STOP_TUI_DOCTOR_SECRET", None)
            listener.close()
    if out.error is not None or not isinstance(out.value, dict):
        return {"error": out.error or "the probe returned no report"}
    v = out.value
    return {
        "reads_secret_env": v.get("secret_env") == marker,
        "reads_world_readable_file": v.get("secret_file") == marker,
        "sees_home_files": bool(_unexpected(v.get("home"), Path.home())),
        "sees_project_files": bool(_unexpected(v.get("project"), Path.cwd())),
        "reaches_engine_loopback": bool(v.get("loopback")),
        "sees_engine_process": bool(v.get("engine_visible")),
        "creates_user_namespace": bool(v.get("user_namespace")),
        "creates_shared_memory": bool(v.get("shared_memory")),
        "runs_as_root": v.get("uid") == 0,
    }


def _unexpected(names: Any, folder: Path) -> list[str]:
    """Entries of `folder` a run could list, minus the ancestors of what the sandbox binds on
    purpose (the Python prefix may live under the home folder, as with pyenv)."""
    if not isinstance(names, list):
        return []
    from stop_tui.engine.sandbox.isolation import bound_paths

    allowed = set()
    for path in bound_paths():
        try:
            allowed.add(Path(path).relative_to(folder).parts[0])
        except (ValueError, IndexError):
            continue
    return [n for n in names if n not in allowed]


LOCAL_PROBE = ("You are a helpful assistant.", "Name three colours, one per line.")
LOCAL_PROBE_TOKENS = 32


def local_model_report(model: str = "local") -> dict[str, Any]:
    """Load the embedded model in its worker and time one short greedy generation."""
    import time

    from stop_tui.engine.errors import UserError
    from stop_tui.engine.lm.base import LMRequestError
    from stop_tui.engine.lm.local_backend import (
        LocalBackend,
        LocalModelMissing,
        extra_bufts_setting,
        failure_hint,
    )

    if model != "local" and not model.startswith("local:"):
        raise UserError(f"doctor checks the embedded model: --model local or local:PATH.gguf (got {model!r})")
    started = time.monotonic()
    try:
        backend = LocalBackend(model.split(":", 1)[1] if ":" in model else None)
    except LocalModelMissing as exc:
        return {"ok": True, "installed": False, "error": str(exc)}
    except UserError as exc:  # a bad GGUF, or a worker that died loading it
        try:
            hint = failure_hint(extra_bufts_setting()[0])
        except UserError:
            hint = None
        return {"ok": False, "installed": True, "error": str(exc), "hint": hint}
    data: dict[str, Any] = {"ok": True, "installed": True, "start_seconds": round(time.monotonic() - started, 3),
                            **backend.load_info}
    try:
        started = time.monotonic()
        out = backend.request(*LOCAL_PROBE, n=1, temperature=0.0, max_tokens=LOCAL_PROBE_TOKENS, seed=1)
        seconds = time.monotonic() - started
    except LMRequestError as exc:
        data.update(ok=False, error=str(exc), hint=backend.failure_hint)
        return data
    finally:
        backend.close()
    data.update(generated_tokens=out.completion_tokens, generation_seconds=round(seconds, 3),
                tokens_per_second=round(out.completion_tokens / seconds, 1) if seconds > 0 else None)
    if out.error or not out.texts or not out.texts[0]:
        data.update(ok=False, error=out.error or "the model generated no text")
    return data


def print_local_model(local: dict[str, Any]) -> None:
    if not local["installed"]:
        print(f"local model: not installed: {local['error']}")
        return
    if "path" not in local:
        print(f"local model: FAILED: {local['error']}")
        if local.get("hint"):
            print(f"  try: {local['hint']}")
        return
    print(f"local model: {local['path']} ({local['size'] / 1e6:.1f} MB)")
    print(f"  loaded in {local['load_seconds']:.2f} s in worker pid {local['pid']} (llama-cpp-python "
          f"{local['llama_cpp_python']}, n_ctx {local['n_ctx']}, {local['n_threads']} threads, extra "
          f"buffer types {'on' if local['use_extra_bufts'] else 'off'})")
    if "tokens_per_second" in local:
        print(f"  generated {local['generated_tokens']} tokens in {local['generation_seconds']:.2f} s: "
              f"{local['tokens_per_second']} tokens/s")
    if not local["ok"]:
        print(f"  FAILED: {local['error']}")
        if local.get("hint"):
            print(f"  try: {local['hint']}")


def report(model: str = "local") -> dict[str, Any]:
    from stop_tui.engine.sandbox.pool import sandbox_report
    from stop_tui.engine.sandbox.protections import DESCRIPTIONS

    data = sandbox_report()
    data["descriptions"] = DESCRIPTIONS
    data["probes"] = probe() if data.get("mode") else {"error": data.get("error")}
    leaks = [k for k, v in data["probes"].items() if v is True]
    data["leaks"] = leaks
    data["local_model"] = local_model_report(model)
    data["ok"] = (not data["missing"] and not leaks and "error" not in data["probes"]
                  and data["local_model"]["ok"])
    return data


def run(args: argparse.Namespace) -> int:
    data = report(args.model)
    if args.json:
        print(json.dumps(data, indent=2))
        return 0 if data["ok"] else 1
    mode = data.get("mode") or "none (the sandbox could not start)"
    print(f"sandbox mode: {mode}")
    for failure in data.get("fallbacks", []):
        print(f"  (fell back from {failure})")
    if data.get("error"):
        print(f"  error: {data['error']}")
    for note in data.get("notes", []):
        print(f"  note: {note}")
    for name, active in data["protections"].items():
        print(f"  [{'x' if active else ' '}] {name:<20} {data['descriptions'].get(name, '')}")
    print("live probe (a program in the sandbox tries):")
    probes = data["probes"]
    if "error" in probes:
        print(f"  probe failed: {probes['error']}")
    else:
        for name, got_through in probes.items():
            print(f"  {'LEAK' if got_through else 'ok  '} {name.replace('_', ' ')}")
    if data["missing"]:
        print(f"missing: {', '.join(data['missing'])}"
              + ("  (install bubblewrap: apt-get install bubblewrap)" if "bubblewrap" in data["missing"] else ""))
    else:
        print("all protections active")
    print_local_model(data["local_model"])
    return 0 if data["ok"] else 1
