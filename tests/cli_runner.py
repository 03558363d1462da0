"""Run ``deploykit`` commands as separate processes, fast: a server process imports the heavy modules
(torch, timm, onnx, …) once, then forks one child per command. The child is a process of its own
(own exit status, own stdout/stderr files, own working directory and process group) that does what
``python -m deploykit.cli ARGS`` does: ``sys.exit(main(ARGS))`` at the top level, so an uncaught
exception prints the interpreter's traceback and exits 1, as the real command would.

Set ``DEPLOYKIT_TEST_FRESH_PROCESS=1`` to run every command as a fresh ``python -m deploykit.cli``
instead (slow: a few seconds of imports each; the same results).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRELOAD = ("torch", "timm", "onnx", "pandas", "deploykit.cli", "deploykit.models",
           "deploykit.prune", "deploykit.export", "deploykit.verify", "deploykit.latency.table",
           "deploykit.latency.profile", "deploykit.search", "deploykit.training", "deploykit.data",
           "deploykit.pipeline", "deploykit.results_table")


@dataclass(frozen=True)
class Completed:
    """What one command did: its exit status (negative: killed by that signal), stdout and stderr."""

    code: int
    stdout: str
    stderr: str
    timed_out: bool = False


class CliRunner:
    """``run(argv, cwd=...)`` runs ``deploykit ARGV`` in a process of its own; ``close()`` ends the server."""

    def __init__(self, logs: Path, *, fresh: bool | None = None):
        self.logs = Path(logs)
        self.logs.mkdir(parents=True, exist_ok=True)
        if fresh is None:  # no fork (Windows): fresh processes
            fresh = os.environ.get("DEPLOYKIT_TEST_FRESH_PROCESS") == "1" or not hasattr(os, "fork")
        self.fresh = fresh
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT),
                    os.environ.get("PYTHONPATH")))), "OMP_NUM_THREADS": "1"}
        self._count = 0
        self._server = None if self.fresh else self._start()

    def _start(self) -> subprocess.Popen:
        server = subprocess.Popen([sys.executable, __file__, *PRELOAD], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, env=self.env, cwd=ROOT, text=True)
        if server.stdout.readline().strip() != "ready":
            server.kill()
            raise RuntimeError("the deploykit command server did not start")
        return server

    def run(self, argv: list[str], *, cwd: Path, timeout: float = 120.0) -> Completed:
        self._count += 1
        stdout, stderr = self.logs / f"{self._count}.out", self.logs / f"{self._count}.err"
        if self.fresh:
            code, timed_out = self._run_fresh(argv, cwd, stdout, stderr, timeout)
        else:
            request = {"argv": list(argv), "cwd": str(cwd), "stdout": str(stdout), "stderr": str(stderr),
                       "timeout": timeout}
            self._server.stdin.write(json.dumps(request) + "\n")
            self._server.stdin.flush()
            reply = self._server.stdout.readline()
            if not reply:
                raise RuntimeError("the deploykit command server died")
            answer = json.loads(reply)
            code, timed_out = answer["code"], answer["timed_out"]
        return Completed(code=code, stdout=stdout.read_text(errors="replace"),
                         stderr=stderr.read_text(errors="replace"), timed_out=timed_out)

    def _run_fresh(self, argv, cwd, stdout, stderr, timeout) -> tuple[int, bool]:
        with open(stdout, "w") as out, open(stderr, "w") as err:
            child = subprocess.Popen([sys.executable, "-m", "deploykit.cli", *argv], cwd=cwd, env=self.env,
                                     stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True)
            try:
                return child.wait(timeout=timeout), False
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                return child.wait(), True

    def close(self) -> None:
        if self._server is not None:
            self._server.stdin.close()
            self._server.wait(timeout=30)
            self._server = None


# --- the server (this file run as a script) -----------------------------------------------------------

def _serve(preload: list[str]) -> dict:
    """Import ``preload``, then answer requests until stdin closes; returns (in a forked child only)
    the request that child is to run."""
    import contextlib
    import importlib

    for name in preload:
        with contextlib.suppress(ImportError):  # an optional extra: the command reports it itself
            importlib.import_module(name)
    print("ready", flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            return request
        code, timed_out = _wait(pid, request["timeout"])
        print(json.dumps({"code": code, "timed_out": timed_out}), flush=True)
    sys.exit(0)


def _wait(pid: int, timeout: float) -> tuple[int, bool]:
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), False
        if time.monotonic() > deadline:
            os.killpg(pid, signal.SIGKILL)  # the command and any worker it started
            _, status = os.waitpid(pid, 0)
            return os.waitstatus_to_exitcode(status), True
        time.sleep(0.01)


def _become_command(request: dict) -> list[str]:
    """In the forked child: own process group, working directory, stdin/stdout/stderr."""
    os.setpgid(0, 0)
    os.chdir(request["cwd"])
    for fd, path, flags in ((0, os.devnull, os.O_RDONLY),
                            (1, request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                            (2, request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
        opened = os.open(path, flags, 0o644)
        os.dup2(opened, fd)
        os.close(opened)
    sys.stdin = open(os.devnull)  # noqa: SIM115 - the command's stdin for its whole life
    sys.argv = ["deploykit", *request["argv"]]
    return list(request["argv"])


def _exit_code(error: SystemExit) -> int:
    """What the interpreter makes of ``sys.exit(value)``."""
    if error.code is None or isinstance(error.code, int):
        return error.code or 0
    print(error.code, file=sys.stderr)
    return 1


def _run_command(argv: list[str]) -> None:
    """``sys.exit(main(argv))`` as the interpreter runs it at the top level (an uncaught exception:
    its traceback, exit 1; then the atexit handlers), except that the heavy interpreter is not torn
    down object by object (seconds for a process holding torch): it ends with ``os._exit``."""
    import atexit

    from deploykit.cli import main

    try:
        code = _exit_code(SystemExit(main(argv)))
    except SystemExit as error:
        code = _exit_code(error)
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    _run_command(_become_command(_serve(sys.argv[1:])))
