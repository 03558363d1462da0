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
  starts; the measurement is :func:`deploykit.measure.client.measure_onnx` (a fresh worker process,
  killed at the timeout) under a lock, so concurrent clients queue and never share the machine;
- ``POST /run``: the same with a :class:`deploykit.remote.wire.RunRequest`: the file run on inputs drawn
  from a seed, in a fresh worker process (:func:`deploykit.measure.client.run_outputs`), under the same
  lock; the reply holds the first output of each run as encoded arrays (verify's numerics).

Errors are ``{"error": one line, "type": DeployKitError subclass}`` with 401 (token), 404 (unknown or
unserved target), 408 (an upload that stalled past ``--body-timeout``), 413 (too large), 422 (not ONNX,
bad request, past a per-request bound, the model fails to run, a reply past ``--max-reply-mb``), 503
(runtime unavailable, or the queue is full: then with ``Retry-After``), 504 (timeout); each also one
line in the agent's log (stderr). A connection whose headers are not in after ``--header-timeout`` is
closed unanswered; a client that disconnects while its model runs has its worker killed.
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
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploykit.checks import require_int, require_number
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
KEEP_ALIVE_S = 5  # an idle kept-alive connection is closed after this
MAX_HEADERS_BYTES = 64 * 1024  # the request line and headers together (the request header is ≤ 16 KB)
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
    header_timeout_s: float = 10.0        # a connection's request line and headers, from its first byte
    body_timeout_s: float = 30.0          # the longest wait for the next piece of an upload
    max_threads: int | None = None        # most protocol.threads a request may ask for (None: the CPUs)
    max_input_elements: int = 2**26       # most elements in a request's input (64 Mi: 256 MB of fp32)
    max_reply_mb: float = 64.0            # largest reply (a run's outputs)

    def __post_init__(self) -> None:
        require_int("--port", self.port, least=0, most=65535)
        for name, value in (("--max-upload-mb", self.max_upload_mb), ("--timeout", self.timeout_s),
                            ("--header-timeout", self.header_timeout_s),
                            ("--body-timeout", self.body_timeout_s), ("--max-reply-mb", self.max_reply_mb)):
            require_number(name, value, above=0)
        if self.max_threads is None:
            object.__setattr__(self, "max_threads", os.cpu_count() or 1)
        for name, value in (("--max-queue", self.max_queue), ("--max-threads", self.max_threads),
                            ("--max-input-elements", self.max_input_elements)):
            require_int(name, value, least=1)
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_reply_bytes(self) -> int:
        return int(self.max_reply_mb * 1024 * 1024)

    def limits(self) -> dict[str, Any]:
        """The per-request bounds, as ``/health`` reports them."""
        return {"max_upload_bytes": self.max_upload_bytes, "timeout_s": self.timeout_s,
                "max_queue": self.max_queue, "header_timeout_s": self.header_timeout_s,
                "body_timeout_s": self.body_timeout_s, "max_threads": self.max_threads,
                "max_input_elements": self.max_input_elements, "max_reply_bytes": self.max_reply_bytes}

    def check_order(self, order: MeasureRequest | RunRequest) -> None:
        """Refuse (ConfigError, a 422) a request past this agent's per-request bounds, before its upload
        is read: too many threads, too large an input."""
        threads = getattr(getattr(order, "protocol", None), "threads", None)
        if threads is not None and threads > self.max_threads:
            raise ConfigError(f"{order.kind} request: protocol.threads {threads} is over this device's limit "
                              f"of {self.max_threads} (its --max-threads)")
        elements = math.prod(order.input_shape)
        if elements > self.max_input_elements:
            raise ConfigError(f"{order.kind} request: input {format_shape(order.input_shape)} has {elements} "
                              f"elements, over this device's limit of {self.max_input_elements} "
                              "(its --max-input-elements)")

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
                **self.config.limits(), "queued": self.queued, "measuring": self.measuring,
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
    (so an unauthenticated upload is never read); anything but plain HTTP (a websocket) is closed
    unanswered, authenticated or not: the agent serves HTTP requests only."""

    def __init__(self, app, agent: Agent):
        self.app, self.agent = app, agent

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":  # websocket (or anything else): never served, never passed on
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            return
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
        line = body.pop("_log", "")
        response = _reply(agent, request.scope, 200, body, line=None)
        if len(response.body) > agent.config.max_reply_bytes:
            return _error(agent, request.scope, 422, ModelError(
                f"the reply would be {len(response.body) / 2**20:.2f} MB, over this device's limit of "
                f"{agent.config.max_reply_mb:g} MB (its --max-reply-mb): ask for fewer inputs"))
        agent.log(f"200 {_who(request.scope)}" + (f": {line}" if line else ""))
        return response

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
    agent.config.check_order(order)
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
    """Stream the body to ``path``, refusing it (413) as soon as it passes the limit, and (408) when no
    piece of it arrives for ``--body-timeout`` seconds: a stalled upload does not hold its place."""
    size = 0
    wait = agent.config.body_timeout_s
    chunks = request.stream().__aiter__()
    with path.open("wb") as out:
        while True:
            try:
                chunk = await asyncio.wait_for(chunks.__anext__(), timeout=wait)
            except StopAsyncIteration:
                break
            except asyncio.TimeoutError:
                raise Refusal(408, DeviceError(f"the upload stalled: nothing arrived for {wait:g} s after "
                                               f"{size} bytes (this device's --body-timeout)"),
                              {"Connection": "close"}) from None
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
        return await job(agent, request, order, target, path, size=size, queued_s=queued_s)
    finally:
        agent.measuring = None
        agent.lock.release()


async def _run_worker(agent: Agent, request, order: MeasureRequest, target, path: Path, *, size: int,
                      queued_s: float) -> dict:
    from deploykit.measure.client import measure_onnx

    what = f"{order.name} on {target.name}, input {format_shape(order.input_shape)}"

    def work(timeout: float, cancel: threading.Event):
        return measure_onnx(path, target=target, protocol=order.protocol, input_shape=order.input_shape,
                            timeout_s=timeout, cancel=cancel, workdir=path.parent)

    result, timing = await _in_worker(agent, request, order, target, "measuring", what, queued_s, work)
    return {"measurement": result.as_dict(), **_identity(agent, order, target), **timing,
            "upload_bytes": size, "queued_s": queued_s,
            "_log": f"{what}: median {result.median_ms:.4g} ms, n {result.n} "
                    f"[{timing['finished_at'] - timing['started_at']:.1f} s]"}


async def _run_outputs(agent: Agent, request, order: RunRequest, target, path: Path, *, size: int,
                       queued_s: float) -> dict:
    from deploykit.measure.client import run_outputs

    what = (f"{order.name} on {target.name}, {order.n_inputs} seeded input(s) "
            f"{format_shape(order.input_shape)}")

    def work(timeout: float, cancel: threading.Event):
        return run_outputs(path, target=target, input_shape=order.input_shape, seed=order.seed,
                           n_inputs=order.n_inputs, timeout_s=timeout, cancel=cancel, workdir=path.parent)

    result, timing = await _in_worker(agent, request, order, target, "running", what, queued_s, work)
    return {**result.as_dict(), **_identity(agent, order, target), **timing, "upload_bytes": size,
            "queued_s": queued_s,
            "_log": f"ran {what} [{timing['finished_at'] - timing['started_at']:.1f} s]"}


async def _in_worker(agent: Agent, request, order: MeasureRequest | RunRequest, target, verb: str, what: str,
                     queued_s: float, work: Callable[[float, threading.Event], Any]) -> tuple[Any, dict]:
    """``work(timeout, cancel)`` (a fresh worker process) in a thread; its result and when it ran. A
    worker past the timeout is a 504; one whose client went away is killed at once."""
    from starlette.concurrency import run_in_threadpool

    from deploykit.measure.client import WorkerCancelled

    timeout = min(order.timeout_s or agent.config.timeout_s, agent.config.timeout_s)
    agent.log(f"{verb} {what} (queued {queued_s:.1f} s)")
    agent.workers_started += 1
    started_at, began = time.time(), time.monotonic()
    cancel = threading.Event()
    watcher = asyncio.ensure_future(_cancel_on_disconnect(request, cancel))
    try:
        result = await run_in_threadpool(work, timeout, cancel)
    except WorkerCancelled:
        raise DeviceError(f"the client went away while {verb} {order.name}; the worker was killed") from None
    except DeployKitError as error:
        # measure_onnx raises a plain DeployKitError when its worker ran past the timeout (and kills it)
        if type(error) is DeployKitError and time.monotonic() - began >= timeout:
            raise Refusal(504, DeviceError(f"{verb} {order.name} on {target.name} did not finish within "
                                           f"{timeout:g} s; the worker was killed")) from None
        raise
    finally:
        watcher.cancel()
    return result, {"started_at": started_at, "finished_at": time.time(), "timeout_s": timeout,
                    "load_average": _load_average()}


async def _cancel_on_disconnect(request, cancel: threading.Event) -> None:
    """Set ``cancel`` as soon as the client of ``request`` disconnects (polled: starlette reports a
    disconnect only when asked)."""
    from deploykit.measure.client import CANCEL_POLL_S

    while not await request.is_disconnected():
        await asyncio.sleep(CANCEL_POLL_S)
    cancel.set()


def _identity(agent: Agent, order: MeasureRequest | RunRequest, target) -> dict:
    """What a reply says about where it ran: the target's runtime and device, the machine."""
    info = agent.fingerprint["targets"][target.name]
    return {"name": order.name, "target": target.name, "input_shape": list(order.input_shape),
            "runtime": info["runtime"], "runtime_version": info["runtime_version"], "device": info["device"],
            "fingerprint": agent.fingerprint}


def _load_average() -> list[float] | None:
    from deploykit.measure.processes import load_average

    return load_average()


# --- starting the agent --------------------------------------------------------------------------------

def serve(config: ServeConfig, *, log: Log | None = None) -> None:
    """Run the agent until interrupted. Refuses to start (a one-line DeployKitError) without a usable
    token file, with bad TLS files, with nothing to serve, or when the address cannot be bound."""
    say = log or _stderr
    uvicorn = _require_framework()
    token, _ = read_token(config.token_file, private=True)
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
        f"uploads up to {config.max_upload_mb:g} MB, timeout {config.timeout_s:g} s, at most "
        f"{config.max_threads} thread(s) and {config.max_input_elements} input elements a request")
    server = uvicorn.Server(uvicorn.Config(
        build_app(agent), log_level="warning", access_log=False, lifespan="off", server_header=False,
        ssl_certfile=str(config.tls_cert) if config.tls else None,
        ssl_keyfile=str(config.tls_key) if config.tls else None, timeout_graceful_shutdown=5,
        http=header_timeout_protocol(config.header_timeout_s), ws="none",
        timeout_keep_alive=KEEP_ALIVE_S, h11_max_incomplete_event_size=MAX_HEADERS_BYTES))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    say("stopped")


def header_timeout_protocol(seconds: float):
    """uvicorn's h11 protocol, closing a connection whose request line and headers have not all
    arrived ``seconds`` after their first byte (or after it opened): uvicorn itself waits forever for
    a request that never ends its headers, so a few slow clients could hold every connection."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutProtocol(H11Protocol):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._header_timer = None
            self._arm_header_timer()

        def data_received(self, data: bytes) -> None:
            if self._header_timer is None and (self.cycle is None or self.cycle.response_complete):
                self._arm_header_timer()  # the first bytes of the next request on a kept-alive connection
            super().data_received(data)
            if self.cycle is not None and not self.cycle.response_complete:
                self._disarm_header_timer()  # its headers are in: the body has its own timeout

        def connection_lost(self, exc) -> None:
            self._disarm_header_timer()
            super().connection_lost(exc)

        def _arm_header_timer(self) -> None:
            self._header_timer = self.loop.call_later(seconds, self._headers_too_slow)

        def _disarm_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                self.transport.close()

    return HeaderTimeoutProtocol


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
