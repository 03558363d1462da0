"""A device agent on this machine, in a subprocess: for tests, benchmarks, and trying the agent out.

:class:`LocalAgent` starts ``deploykit serve`` on 127.0.0.1 (any free port unless one is given) with a
fresh token in a private file, waits until it listens, hands out clients, and ends it (with whatever
worker it left behind: it runs in a process group of its own).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from deploykit.errors import DeviceError, last_line
from deploykit.remote.client import DeviceClient

_PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the directory that holds deploykit/


class LocalAgent:
    """``deploykit serve --token-file <workdir>/token --port <port> *options``, logging to
    ``<workdir>/agent.log``, with ``env`` added to this process's environment. Use as a context
    manager, or call :meth:`start` and :meth:`stop`; :meth:`kill` ends it as a crash would."""

    def __init__(self, workdir: str | Path, *options: str, port: int = 0, token: str | None = None,
                 token_mode: int = 0o600, env: Mapping[str, str] | None = None):
        self.workdir = Path(workdir)
        self.options, self.port = options, port
        self.env = dict(env or {})
        self.token = token or secrets.token_urlsafe(32)
        self.token_mode = token_mode
        self.token_file = self.workdir / "token"
        self.log_file = self.workdir / "agent.log"
        self.process: subprocess.Popen | None = None
        self.url = ""

    def __enter__(self) -> LocalAgent:
        return self.start().wait_listening()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def log(self) -> str:
        return self.log_file.read_text() if self.log_file.is_file() else ""

    def start(self) -> LocalAgent:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.token_file.write_text(self.token + "\n")
        self.token_file.chmod(self.token_mode)
        command = [sys.executable, "-m", "deploykit.cli", "serve", "--token-file", str(self.token_file),
                   "--port", str(self.port), *self.options]
        env = {**os.environ, **self.env}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PACKAGE_ROOT), env.get("PYTHONPATH")) if p)
        with self.log_file.open("w") as log:
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                            env=env, start_new_session=True)
        return self

    def wait_listening(self, timeout_s: float = 120.0) -> LocalAgent:
        """Wait for the agent's "listening on URL" line; DeviceError if it exits or never says it."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in self.log.splitlines():
                if "listening on " in line:
                    self.url = line.split("listening on ", 1)[1].split(";", 1)[0]
                    return self
            if self.process is None or self.process.poll() is not None:
                raise DeviceError(f"the local agent exited: {self._last_line()}")
            time.sleep(0.05)
        raise DeviceError(f"the local agent did not start within {timeout_s:g} s: {self._last_line()}")

    def wait_for(self, text: str, timeout_s: float = 60.0) -> None:
        """Wait until ``text`` appears in the agent's log; DeviceError after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while text not in self.log:
            if time.monotonic() > deadline:
                raise DeviceError(f"{text!r} never appeared in the local agent's log")
            time.sleep(0.05)

    def client(self, **options) -> DeviceClient:
        return DeviceClient(self.url, options.pop("token", self.token), **options)

    def kill(self) -> None:
        """SIGKILL the agent alone, as a crash or a power cut would (:meth:`stop` cleans up after)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL for anything left in the agent's process group (a running worker)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def _last_line(self) -> str:
        return last_line(self.log) or "no output"
