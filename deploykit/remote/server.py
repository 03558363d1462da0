"""The device agent behind ``deploykit serve``: an HTTP service (starlette on uvicorn) that measures
uploaded ONNX files on this machine's targets, one at a time, exactly as a local measurement would.

Endpoints (every request needs ``Authorization: Bearer <token>``; every reply is JSON):

- ``GET /health``: version, API version, limits, and the queue (``queued``, ``measuring``);
- ``GET /targets``: every known target, ``served`` or why not (rows as ``deploykit targets --format json``);
- ``GET /fingerprint``: this machine (:func:`deploykit.remote.device.machine_fingerprint`: per served
  target the runtime, its version, the device and the machine's real fingerprint);
- ``POST /measure``: body = the ONNX file, header ``X-DeployKit-Request`` = a
  :class:`deploykit.remote.wire.MeasureRequest`. The body is streamed to a private temporary directory
  and refused as soon as it passes the size limit; the file must pass the ONNX checker before a worker
  starts; the measurement is :func:`deploykit.latency.measure.measure_onnx` (a fresh worker process,
  killed at the timeout) under a lock, so concurrent clients queue and never share the machine;
- ``POST /run``: the same with a :class:`deploykit.remote.wire.RunRequest`: the file run on inputs drawn
  from a seed, in a fresh worker process (:func:`deploykit.latency.measure.run_outputs`), under the same
  lock; the reply holds the first output of each run as encoded arrays (verify's numerics).

Errors are ``{"error": one line, "type": DeployKitError subclass}`` with 401 (token), 404 (unknown or
unserved target), 413 (too large), 422 (not ONNX, bad request, the model fails to run), 503 (runtime
unavailable, or the queue is full: then with ``Retry-After``), 504 (timeout); each also one line in the
agent's log (stderr).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import math
import os
import socket
import ssl
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploykit.errors import (
    AuthError,
    ConfigError,
    DeployKitError,
    DeviceError,
    ModelError,
    RuntimeUnavailableError,
    TableError,
)
from deploykit.remote.device import ServedTargets, check_onnx_upload, machine_fingerprint
from deploykit.remote.wire import (
    API_VERSION,
    DEFAULT_PORT,
    DOCTORED_FINGERPRINT_ENV,
    REQUEST_HEADER,
    MeasureRequest,
    RunRequest,
    error_reply,
    json_safe,
    read_token,
)
from deploykit.shapes import format_shape

Log = Callable[[str], None]

INSTALL_HINT = "pip install 'deploykit[remote]' (starlette, uvicorn)"
RETRY_AFTER_S = 5  # what a client is told to wait when the queue is full
_LOOPBACK_NAMES = ("localhost",)

# The HTTP status of each kind of error, most specific first.
_STATUS_BY_TYPE: tuple[tuple[type[DeployKitError], int], ...] = (
    (AuthError, 401), (DeviceError, 500), (RuntimeUnavailableError, 503), (ModelError, 422),
    (ConfigError, 422), (TableError, 422), (DeployKitError, 500))


@dataclass(frozen=True)
class ServeConfig:
    """The options of ``deploykit serve``."""

    token_file: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    targets: tuple[str, ...] = ()
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_upload_mb: float = 1024.0
    timeout_s: float = 600.0
    max_queue: int = 16

    def __post_init__(self) -> None:
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ConfigError(f"--port must be 0–65535, got {self.port!r}")
        for name, value in (("--max-upload-mb", self.max_upload_mb), ("--timeout", self.timeout_s)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number, got {value!r}")
        if isinstance(self.max_queue, bool) or not isinstance(self.max_queue, int) or self.max_queue < 1:
            raise ConfigError(f"--max-queue must be a positive integer, got {self.max_queue!r}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


class Refusal(Exception):
    """A DeployKitError answered with a given HTTP status (and headers) instead of its type's."""

    def __init__(self, status: int, error: DeployKitError, headers: dict[str, str] | None = None):
        super().__init__(str(error))
        self.status, self.error, self.headers = status, error, headers or {}


class Agent:
    """One agent's state: what it serves, its limits, and the queue of measurements."""

    def __init__(self, *, token: str, served: ServedTargets, fingerprint: dict, config: ServeConfig,
                 log: Log):
        self.token = token.encode()
        self.served = served
        self.listing = served.listing()
        self.fingerprint = fingerprint
        self.config = config
        self.log = log
        self.lock = asyncio.Lock()  # FIFO: the measurement queue
        self.pending = 0  # requests admitted to /measure: uploading, queued or measuring
        self.queued = 0  # uploaded and waiting for the lock
        self.measuring: str | None = None
        self.workers_started = 0

    def health(self) -> dict:
        from deploykit import __version__

        return {"ok": True, "deploykit_version": __version__, "api_version": API_VERSION,
                "max_upload_bytes": self.config.max_upload_bytes, "timeout_s": self.config.timeout_s,
                "max_queue": self.config.max_queue, "queued": self.queued, "measuring": self.measuring,
                "workers_started": self.workers_started, "tls": self.config.tls,
                "load_average": _load_average()}

    def authorized(self, header: bytes) -> bool:
        scheme, _, value = header.partition(b" ")
        # compare_digest: the time taken does not depend on how much of the token was right
        return hmac.compare_digest(value.strip(), self.token) and scheme.lower() == b"bearer"


# --- the ASGI application ----------------------------------------------------------------------------

def build_app(agent: Agent):
    """The starlette application of ``agent``, wrapped in its bearer-token check."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.routing import Route

    async def health(request):
        return agent.health()

    async def targets(request):
        return {"targets": agent.listing}

    async def fingerprint(request):
        return agent.fingerprint

    async def measure(request):
        order = MeasureRequest.from_header(request.headers.get(REQUEST_HEADER))
        return await _upload_and_run(agent, request, order, _run_worker)

    async def run(request):
        order = RunRequest.from_header(request.headers.get(REQUEST_HEADER))
        return await _upload_and_run(agent, request, order, _run_outputs)

    async def no_route(request, exc: HTTPException):
        error = ConfigError(f"no such endpoint: {request.method} {request.url.path}"
                            if exc.status_code == 404 else f"{exc.status_code}: {exc.detail}")
        return _error(agent, request.scope, exc.status_code, error)

    routes = [Route("/health", _endpoint(agent, health)), Route("/targets", _endpoint(agent, targets)),
              Route("/fingerprint", _endpoint(agent, fingerprint)),
              Route("/measure", _endpoint(agent, measure), methods=["POST"]),
              Route("/run", _endpoint(agent, run), methods=["POST"])]
    app = Starlette(routes=routes, exception_handlers={HTTPException: no_route})
    return _BearerAuth(app, agent)


class _BearerAuth:
    """ASGI middleware: a request without the agent's token is answered 401 before any route runs
    (so an unauthenticated upload is never read)."""

    def __init__(self, app, agent: Agent):
        self.app, self.agent = app, agent

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            header = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
            if not self.agent.authorized(header):
                error = AuthError("wrong or missing token")
                response = _reply(self.agent, scope, 401, error_reply(error), line=f"AuthError: {error}",
                                  headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _endpoint(agent: Agent, handler: Callable[[Any], Awaitable[dict]]):
    """Wrap ``handler`` (returns the JSON body) so that every error is a JSON reply and a log line."""
    from starlette.requests import ClientDisconnect

    async def endpoint(request):
        try:
            body = await handler(request)
        except Refusal as refusal:
            return _error(agent, request.scope, refusal.status, refusal.error, refusal.headers)
        except DeployKitError as error:
            return _error(agent, request.scope, _status_of(error), error)
        except ClientDisconnect:
            agent.log(f"{_who(request.scope)}: the client went away during its upload")
            return _reply(agent, request.scope, 400, error_reply(DeviceError("client went away")), line=None)
        except Exception as error:  # a bug in deploykit: keep its traceback in the agent's log
            traceback.print_exc(file=sys.stderr)
            failure = DeployKitError(f"internal error in the device agent: {type(error).__name__}: {error}")
            return _error(agent, request.scope, 500, failure)
        body = dict(body)
        return _reply(agent, request.scope, 200, body, line=body.pop("_log", ""))

    return endpoint


def _status_of(error: DeployKitError) -> int:
    return next(status for kind, status in _STATUS_BY_TYPE if isinstance(error, kind))


def _error(agent: Agent, scope, status: int, error: DeployKitError, headers: dict | None = None):
    body = error_reply(error)
    return _reply(agent, scope, status, body, line=f"{body['type']}: {body['error']}", headers=headers)


def _reply(agent: Agent, scope, status: int, body: dict, *, line: str | None, headers: dict | None = None):
    """A JSON response, logged as one line (``line`` None: not logged)."""
    from starlette.responses import JSONResponse

    if line is not None:
        agent.log(f"{status} {_who(scope)}" + (f": {line}" if line else ""))
    return JSONResponse(json_safe(body), status_code=status, headers=headers)


def _who(scope) -> str:
    client = scope.get("client") or ("?", 0)
    return f"{scope.get('method', '?')} {scope.get('path', '?')} from {client[0]}"


# --- POST /measure and /run ----------------------------------------------------------------------------

Job = Callable[..., Awaitable[dict]]


async def _upload_and_run(agent: Agent, request, order: MeasureRequest | RunRequest, job: Job) -> dict:
    """Admit the upload, stream it in, wait for the lock, check it, and run ``job`` on it."""
    try:
        target = agent.served.require(order.target)
    except RuntimeUnavailableError:
        raise
    except ConfigError as error:
        raise Refusal(404, error) from None
    limit = agent.config.max_upload_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Refusal(413, _too_large(agent, int(declared)))
    if agent.pending >= agent.config.max_queue:
        raise Refusal(503, DeviceError(f"busy: {agent.pending} measure request(s) admitted already "
                                       f"(its --max-queue); retry later"),
                      {"Retry-After": str(RETRY_AFTER_S)})
    agent.pending += 1
    try:
        with tempfile.TemporaryDirectory(prefix="deploykit-serve-") as work:  # mode 0700
            path = Path(work) / "model.onnx"
            size = await _receive_upload(agent, request, path)
            return await _in_turn(agent, request, order, target, path, size, job)
    finally:
        agent.pending -= 1


async def _receive_upload(agent: Agent, request, path: Path) -> int:
    """Stream the body to ``path``, refusing it (413) as soon as it passes the limit."""
    size = 0
    with path.open("wb") as out:
        async for chunk in request.stream():
            size += len(chunk)
            if size > agent.config.max_upload_bytes:
                raise Refusal(413, _too_large(agent, size, at_least=True))
            out.write(chunk)
    if size == 0:
        raise ModelError("empty upload: send the ONNX file as the request body")
    return size


def _too_large(agent: Agent, size: int, *, at_least: bool = False) -> ModelError:
    mb = agent.config.max_upload_mb
    return ModelError(f"the upload is {'over ' if at_least else ''}{size / 2**20:.2f} MB, over this device's "
                      f"limit of {mb:g} MB (its --max-upload-mb)")


async def _in_turn(agent: Agent, request, order: MeasureRequest | RunRequest, target, path: Path, size: int,
                   job: Job) -> dict:
    """Wait for the lock, check the file, run ``job`` on it; the reply body."""
    from starlette.concurrency import run_in_threadpool

    arrived = time.monotonic()
    agent.queued += 1
    try:
        await agent.lock.acquire()
    finally:
        agent.queued -= 1
    try:
        if await request.is_disconnected():  # its client gave up while queued: do not measure for nobody
            raise DeviceError(f"the client went away before {order.name} was measured")
        agent.measuring = f"{order.name} on {target.name}"
        queued_s = time.monotonic() - arrived
        await run_in_threadpool(check_onnx_upload, path)
        return await job(agent, order, target, path, size=size, queued_s=queued_s)
    finally:
        agent.measuring = None
        agent.lock.release()


async def _run_worker(agent: Agent, order: MeasureRequest, target, path: Path, *, size: int,
                      queued_s: float) -> dict:
    from deploykit.latency.measure import measure_onnx

    what = f"{order.name} on {target.name}, input {format_shape(order.input_shape)}"

    def work(timeout: float):
        return measure_onnx(path, target=target, protocol=order.protocol, input_shape=order.input_shape,
                            timeout_s=timeout)

    result, timing = await _in_worker(agent, order, target, "measuring", what, queued_s, work)
    return {"measurement": result.as_dict(), **_identity(agent, order, target), **timing,
            "upload_bytes": size, "queued_s": queued_s,
            "_log": f"{what}: median {result.median_ms:.4g} ms, n {result.n} "
                    f"[{timing['finished_at'] - timing['started_at']:.1f} s]"}


async def _run_outputs(agent: Agent, order: RunRequest, target, path: Path, *, size: int,
                       queued_s: float) -> dict:
    from deploykit.latency.measure import run_outputs

    what = (f"{order.name} on {target.name}, {order.n_inputs} seeded input(s) "
            f"{format_shape(order.input_shape)}")

    def work(timeout: float):
        return run_outputs(path, target=target, input_shape=order.input_shape, seed=order.seed,
                           n_inputs=order.n_inputs, timeout_s=timeout)

    result, timing = await _in_worker(agent, order, target, "running", what, queued_s, work)
    return {**result.as_dict(), **_identity(agent, order, target), **timing, "upload_bytes": size,
            "queued_s": queued_s,
            "_log": f"ran {what} [{timing['finished_at'] - timing['started_at']:.1f} s]"}


async def _in_worker(agent: Agent, order: MeasureRequest | RunRequest, target, verb: str, what: str,
                     queued_s: float, work: Callable[[float], Any]) -> tuple[Any, dict]:
    """``work(timeout)`` (a fresh worker process) in a thread; its result and when it ran. A worker past
    the timeout is a 504."""
    from starlette.concurrency import run_in_threadpool

    timeout = min(order.timeout_s or agent.config.timeout_s, agent.config.timeout_s)
    agent.log(f"{verb} {what} (queued {queued_s:.1f} s)")
    agent.workers_started += 1
    started_at, began = time.time(), time.monotonic()
    try:
        result = await run_in_threadpool(work, timeout)
    except DeployKitError as error:
        # measure_onnx raises a plain DeployKitError when its worker ran past the timeout (and kills it)
        if type(error) is DeployKitError and time.monotonic() - began >= timeout:
            raise Refusal(504, DeviceError(f"{verb} {order.name} on {target.name} did not finish within "
                                           f"{timeout:g} s; the worker was killed")) from None
        raise
    return result, {"started_at": started_at, "finished_at": time.time(), "timeout_s": timeout,
                    "load_average": _load_average()}


def _identity(agent: Agent, order: MeasureRequest | RunRequest, target) -> dict:
    """What a reply says about where it ran: the target's runtime and device, the machine."""
    info = agent.fingerprint["targets"][target.name]
    return {"name": order.name, "target": target.name, "input_shape": list(order.input_shape),
            "runtime": info["runtime"], "runtime_version": info["runtime_version"], "device": info["device"],
            "fingerprint": agent.fingerprint}


def _load_average() -> list[float] | None:
    from deploykit.latency.sentinel import load_average

    return load_average()


# --- starting the agent --------------------------------------------------------------------------------

def serve(config: ServeConfig, *, log: Log | None = None) -> None:
    """Run the agent until interrupted. Refuses to start (a one-line DeployKitError) without a usable
    token file, with bad TLS files, with nothing to serve, or when the address cannot be bound."""
    say = log or _stderr
    uvicorn = _require_framework()
    token, warning = read_token(config.token_file)
    if warning:
        say(f"warning: {warning}")
    _check_tls(config)
    served = ServedTargets.load(config.targets)
    if os.environ.get(DOCTORED_FINGERPRINT_ENV):
        say(f"warning: TEST HOOK: {DOCTORED_FINGERPRINT_ENV} is set: this agent reports a doctored machine "
            "fingerprint; never use it for real measurements")
    agent = Agent(token=token, served=served, fingerprint=machine_fingerprint(served.served.values()),
                  config=config, log=say)
    sock = _listen(config.host, config.port)
    if not config.tls and not _is_loopback(config.host):
        say(f"warning: listening on {config.host} without TLS: the token and every upload cross the "
            "network in clear text; give --tls-cert/--tls-key, or keep the default --host 127.0.0.1 "
            "and reach it through an SSH tunnel")
    say(f"listening on {_url(config, sock)}; serving {_served_line(agent)}; one measurement at a time, "
        f"uploads up to {config.max_upload_mb:g} MB, timeout {config.timeout_s:g} s")
    server = uvicorn.Server(uvicorn.Config(
        build_app(agent), log_level="warning", access_log=False, lifespan="off", server_header=False,
        ssl_certfile=str(config.tls_cert) if config.tls else None,
        ssl_keyfile=str(config.tls_key) if config.tls else None, timeout_graceful_shutdown=5))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    say("stopped")


def _stderr(line: str) -> None:
    print(f"deploykit serve: {line}", file=sys.stderr, flush=True)


def _require_framework():
    try:
        import starlette  # noqa: F401
        import uvicorn
    except ImportError as error:
        raise RuntimeUnavailableError(f"deploykit serve needs {error.name}: {INSTALL_HINT}") from None
    return uvicorn


def _check_tls(config: ServeConfig) -> None:
    """Load the certificate and key once here, so that a bad pair is one line, not a traceback."""
    if not config.tls:
        return
    for name, path in (("--tls-cert", config.tls_cert), ("--tls-key", config.tls_key)):
        if not Path(path).is_file():
            raise ConfigError(f"{name} file not found: {path}")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(str(config.tls_cert),
                                                                           str(config.tls_key))
    except (ssl.SSLError, OSError) as error:
        raise ConfigError(f"cannot use --tls-cert {config.tls_cert} with --tls-key {config.tls_key}: "
                          f"{getattr(error, 'reason', None) or error}") from None


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: any free port), or a one-line ConfigError."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as error:
        raise ConfigError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)  # from here on, connections wait in the backlog until the server runs
    except OSError as error:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    return sock


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _url(config: ServeConfig, sock: socket.socket) -> str:
    host = config.host if ":" not in config.host else f"[{config.host.strip('[]')}]"
    return f"{'https' if config.tls else 'http'}://{host}:{sock.getsockname()[1]}"


def _served_line(agent: Agent) -> str:
    parts = []
    for name in agent.served.served:
        info = agent.fingerprint["targets"][name]
        parts.append(f"{name} ({info['runtime']} {info['runtime_version']} on {info['device']})")
    return ", ".join(parts)
