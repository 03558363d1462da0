"""The client of a device agent (``deploykit serve``), standard library only.

:meth:`DeviceClient.measure` has the call signature of :func:`deploykit.measure.client.measure_onnx`,
so a stage that measures can be pointed at a remote device by swapping that one function;
:meth:`DeviceClient.runtime_info` and :meth:`DeviceClient.fingerprint` say what a table measured there
must record (the device's runtime and machine, never the client's).

Transient failures (connection refused or reset, HTTP 502, 503 with ``Retry-After`` from a full queue)
are retried with bounded exponential backoff (:class:`RetryPolicy`). An agent that stops answering
while it measures is not retried: that is one :class:`DeviceError` line. Every error the agent reports
is raised again as the same DeployKitError subclass, with the agent's one line.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING
from urllib.parse import urlsplit

from deploykit.checks import is_number, require_int
from deploykit.errors import (
    AuthError,
    ConfigError,
    DeployKitError,
    DeviceError,
    ModelError,
    RuntimeUnavailableError,
    error_class,
)
from deploykit.fileio import parse_json
from deploykit.measure.outputs import SeededOutputs
from deploykit.protocol import Measurement, Protocol
from deploykit.remote.wire import (
    API_VERSION,
    DEFAULT_PORT,
    MAX_REPLY_BYTES,
    REQUEST_HEADER,
    MeasureRequest,
    RunRequest,
    measurement_from_wire,
    token_from,
)
from deploykit.runsettings import AUTO, SETTING_KEYS

if TYPE_CHECKING:
    from deploykit.targets import Target

FINGERPRINT_KEYS = ("arch", "os")  # what every machine fingerprint names (hostname and cpu may be blank)
SHOWN_CHARS = 200  # the most of any one text a device sends that is printed or put in an error
# The target settings that change a measurement: the agent's target must have the client's.
MEASURED_SETTINGS = ("runtime", "provider", "runtime_device", "precision")


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff: ``attempts`` tries in all, waiting ``first_delay_s``, then
    ``factor`` times longer each time, at most ``max_delay_s``."""

    attempts: int = 6
    first_delay_s: float = 0.5
    factor: float = 2.0
    max_delay_s: float = 8.0

    def __post_init__(self) -> None:
        require_int("retry attempts", self.attempts, least=1)
        if self.first_delay_s < 0 or self.factor < 1 or self.max_delay_s < 0:
            raise ConfigError("retry delays must be ≥ 0 and the factor ≥ 1")

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (0 = the first retry)."""
        return min(self.first_delay_s * self.factor ** retry, self.max_delay_s)


@dataclass(frozen=True)
class RemoteMeasurement:
    """A measurement taken by a device agent, with what identifies where it was taken."""

    measurement: Measurement
    url: str
    name: str  # the file's name
    target: str
    runtime: str
    runtime_version: str
    device: str
    fingerprint: dict = field(repr=False)
    started_at: float  # the agent's clock (seconds since the epoch) around the worker
    finished_at: float
    queued_s: float
    load_average: list[float] | None = None  # the device's load averages when the worker ended

    @classmethod
    def from_reply(cls, reply: dict, *, url: str) -> RemoteMeasurement:
        try:
            return cls(measurement=measurement_from_wire(reply["measurement"]), **_where(reply, url))
        except (KeyError, TypeError, ValueError) as error:
            raise DeviceError(f"the device at {url} sent a malformed measurement ({error!r})") from None

    def as_dict(self) -> dict:
        return {**asdict(self), "measurement": self.measurement.as_dict()}


@dataclass(frozen=True)
class RemoteOutputs:
    """A file run on seeded inputs by a device agent (verify's numerics), with where it ran."""

    outputs: SeededOutputs
    url: str
    name: str
    target: str
    runtime: str
    runtime_version: str
    device: str
    fingerprint: dict = field(repr=False)
    started_at: float
    finished_at: float
    queued_s: float
    load_average: list[float] | None = None

    @classmethod
    def from_reply(cls, reply: dict, *, url: str) -> RemoteOutputs:
        try:
            where = _where(reply, url)
        except (KeyError, TypeError, ValueError) as error:
            raise DeviceError(f"the device at {url} sent malformed outputs ({error!r})") from None
        return cls(outputs=SeededOutputs.from_dict(reply, what=f"the device at {url}"), **where)


def _where(reply: dict, url: str) -> dict:
    """The fields of a measure or run reply that say where and when it ran."""
    load = reply.get("load_average")
    return {"url": url, "name": str(reply["name"]), "target": str(reply["target"]),
            "runtime": str(reply["runtime"]), "runtime_version": str(reply["runtime_version"]),
            "device": str(reply["device"]), "fingerprint": dict(reply["fingerprint"]),
            "started_at": float(reply["started_at"]), "finished_at": float(reply["finished_at"]),
            "queued_s": float(reply["queued_s"]),
            "load_average": [float(v) for v in load] if isinstance(load, list) else None}


class _Transient(Exception):
    """A failure worth retrying; its message says what happened (``reply``: the agent's answer, if any)."""

    def __init__(self, message: str, reply: _Reply | None = None):
        super().__init__(message)
        self.reply = reply


@dataclass(frozen=True)
class _Reply:
    status: int
    body: dict | None
    retry_after: bool


class DeviceClient:
    """Talks to one device agent at ``url`` (``http://host:port`` or ``https://…``) with ``token``.

    TLS certificates are verified (against ``ca_file`` when given, else the system's CAs). Each call
    opens its own connection. ``sleep`` is the backoff's wait (tests pass a fast one).
    """

    def __init__(self, url: str, token: str, *, ca_file: str | Path | None = None,
                 retry: RetryPolicy = RetryPolicy(), connect_timeout_s: float = 10.0,
                 read_timeout_s: float = 3600.0, sleep: Callable[[float], None] = time.sleep):
        self.url, self._host, self._port, self._prefix, tls = _parse_url(url)
        if not token:
            raise ConfigError("no device token")
        self._token = token
        self._tls = _tls_context(ca_file) if tls else None
        self.retry = retry
        self.connect_timeout_s, self.read_timeout_s = connect_timeout_s, read_timeout_s
        self._sleep = sleep
        self._health: dict | None = None
        self._listing: dict[str, dict] | None = None

    @classmethod
    def connect(cls, url: str, *, token_file: str | Path | None = None, **options) -> DeviceClient:
        """A client whose token comes from ``token_file``, else ``$DEPLOYKIT_DEVICE_TOKEN``."""
        return cls(url, token_from(token_file), **options)

    def __repr__(self) -> str:  # never shows the token
        return f"DeviceClient({self.url!r})"

    # --- what the device is --------------------------------------------------------------------------

    def health(self) -> dict:
        """The agent's version, limits and queue (``queued``, ``measuring``); checks the API version."""
        health = self._get("/health", what="asking for its health")
        if health.get("api_version") != API_VERSION:
            raise DeviceError(f"the device at {self.url} speaks agent API {health.get('api_version')!r}, "
                              f"this client {API_VERSION}: install the same deploykit version on both")
        self._health = health
        return health

    def targets(self) -> list[dict]:
        """Every target the agent knows: ``served``, or ``reason`` why not."""
        rows = self._get("/targets", what="listing its targets").get("targets")
        if not isinstance(rows, list) or not all(isinstance(r, dict) and "name" in r for r in rows):
            raise DeviceError(f"the device at {self.url} sent a malformed target list")
        self._listing = {row["name"]: row for row in rows}
        return rows

    def info(self) -> dict:
        """What ``deploykit device URL`` shows: ``health``, ``targets`` and ``fingerprint`` (see
        :func:`describe_device`)."""
        return {"health": self.health(), "targets": self.targets(), "fingerprint": self.fingerprint()}

    def fingerprint(self) -> dict:
        """The device's machine fingerprint (host, CPU, OS, runtime and device per served target); one
        without the machine's architecture, OS and targets is a DeviceError."""
        fingerprint = self._get("/fingerprint", what="asking for its fingerprint")
        missing = [key for key in FINGERPRINT_KEYS if not isinstance(fingerprint.get(key), str)
                   or not fingerprint[key].strip()]
        if missing or not isinstance(fingerprint.get("targets"), dict):
            raise DeviceError(f"the device at {self.url} sent no usable machine fingerprint (missing or "
                              f"empty: {', '.join(missing) or 'targets'}): is it a deploykit agent of this "
                              "version?")
        return fingerprint

    def runtime_info(self, target: Target) -> dict[str, str]:
        """As :func:`deploykit.measure.client.runtime_info`, for ``target`` on the device."""
        row = self.served_row(target)
        return {"runtime": row["runtime"], "runtime_version": row["runtime_version"],
                "device": row["device_here"]}

    # --- measuring -------------------------------------------------------------------------------------

    def measure(self, onnx_path: str | Path, *, target: Target, protocol: Protocol,
                input_shape: Sequence[int], timeout_s: float | None = None) -> Measurement:
        """Time ``onnx_path`` on ``target`` on the device, as ``measure_onnx`` would there."""
        return self.measure_remote(onnx_path, target=target, protocol=protocol, input_shape=input_shape,
                                   timeout_s=timeout_s).measurement

    def measure_remote(self, onnx_path: str | Path, *, target: Target, protocol: Protocol,
                       input_shape: Sequence[int], timeout_s: float | None = None) -> RemoteMeasurement:
        """:meth:`measure`, with the device's runtime, fingerprint and timestamps."""
        path = Path(onnx_path)
        order = MeasureRequest(target=target.name, input_shape=tuple(input_shape), protocol=protocol,
                               timeout_s=timeout_s, name=path.name)
        reply = self._upload("/measure", path, order, target, what=f"measuring {path.name} on {target.name}")
        return RemoteMeasurement.from_reply(reply, url=self.url)

    def run_remote(self, onnx_path: str | Path, *, target: Target, input_shape: Sequence[int], seed: int,
                   n_inputs: int, timeout_s: float | None = None) -> RemoteOutputs:
        """Run ``onnx_path`` on ``target`` on the device on ``n_inputs`` inputs drawn from ``seed``: the
        first output of each run (:func:`deploykit.measure.outputs.run_seeded`, there)."""
        path = Path(onnx_path)
        order = RunRequest(target=target.name, input_shape=tuple(input_shape), seed=seed, n_inputs=n_inputs,
                           timeout_s=timeout_s, name=path.name)
        reply = self._upload("/run", path, order, target, what=f"running {path.name} on {target.name}")
        return RemoteOutputs.from_reply(reply, url=self.url)

    def _upload(self, endpoint: str, path: Path, order: MeasureRequest | RunRequest, target: Target, *,
                what: str) -> dict:
        """POST ``path`` with ``order`` after checking the target and the upload limit; the reply."""
        if not path.is_file():
            raise ModelError(f"ONNX file not found: {path}")
        self.served_row(target)
        size = path.stat().st_size
        limit = int((self._health or self.health())["max_upload_bytes"])
        if size > limit:
            raise ModelError(f"{path.name} is {size / 2**20:.2f} MB, over the upload limit of the device at "
                             f"{self.url} ({limit / 2**20:g} MB, its --max-upload-mb)")
        headers = {REQUEST_HEADER: order.as_header(), "Content-Type": "application/octet-stream",
                   "Content-Length": str(size)}
        with path.open("rb") as body:
            return self._exchange("POST", endpoint, body=body, headers=headers, what=what, idempotent=False)

    # --- the target check --------------------------------------------------------------------------------

    def served_row(self, target: Target) -> dict:
        """The agent's row for ``target``; refuses a target it does not serve or defines differently."""
        refusal = self.not_served(target)
        if refusal is not None:
            kind, reason = refusal
            raise kind(f"the device at {self.url} {reason}")
        return self._listing[target.name]

    def not_served(self, target: Target) -> tuple[type[DeployKitError], str] | None:
        """Why the agent cannot measure ``target``, as (error class, reason): unknown there or left out
        by its --targets (ConfigError), unable to run there (RuntimeUnavailableError); None when it
        serves it. A target it serves with other settings is raised at once (ConfigError): the target
        files of the two machines must agree, whatever the caller does next."""
        listing = self._listing if self._listing is not None else {r["name"]: r for r in self.targets()}
        row = listing.get(target.name)
        if row is None:
            return ConfigError, (f"does not know target {target.name}; it serves "
                                 + (", ".join(n for n, r in listing.items() if r.get("served")) or "nothing"))
        if not row.get("served"):
            kind = RuntimeUnavailableError if row.get("available") is False else ConfigError
            return kind, f"does not serve target {target.name}: {row.get('reason')}"
        here = target.as_dict()
        differs = [f"{key} {row.get(key)!r} there, {here[key]!r} here" for key in MEASURED_SETTINGS
                   if row.get(key) != here[key]]
        # a run setting the device's file leaves to auto may be settled here (a probe, a table's settings)
        differs += [f"{key} {row.get(key)!r} there, {here[key]!r} here" for key in SETTING_KEYS
                    if row.get(key, here[key]) not in (here[key], AUTO)]
        if differs:
            raise ConfigError(f"target {target.name} differs on the device at {self.url}: "
                              f"{'; '.join(differs)} (use the same target file on both machines)")
        return None

    # --- HTTP ------------------------------------------------------------------------------------------

    def _get(self, path: str, *, what: str) -> dict:
        return self._exchange("GET", path, what=what, idempotent=True)

    def _exchange(self, method: str, path: str, *, what: str, idempotent: bool,
                  body: IO[bytes] | None = None, headers: dict[str, str] | None = None) -> dict:
        """One request with retries; the reply's JSON body, or the agent's error raised again."""
        headers = {**(headers or {}), "Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        for retry in range(self.retry.attempts):
            if body is not None:
                body.seek(0)
            try:
                reply = self._once(method, self._prefix + path, body=body, headers=headers, what=what,
                                   idempotent=idempotent)
                if reply.status == 502 or (reply.status == 503 and reply.retry_after):
                    raise _Transient(f"HTTP {reply.status}: {_message(reply)}", reply)
            except _Transient as failure:
                if retry + 1 == self.retry.attempts:
                    tries = f"after {self.retry.attempts} {'try' if self.retry.attempts == 1 else 'tries'}"
                    if failure.reply is not None and failure.reply.body is not None:
                        return self._result(failure.reply, what=what, tries=tries)
                    raise DeviceError(f"cannot reach the device at {self.url} while {what}: {failure} "
                                      f"({tries})") from None
                self._sleep(self.retry.delay(retry))
                continue
            return self._result(reply, what=what)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _once(self, method: str, path: str, *, body, headers: dict, what: str, idempotent: bool) -> _Reply:
        conn = self._connection()
        try:
            self._open(conn)
            try:
                conn.request(method, path, body=body, headers=headers)
            except OSError as error:  # the agent may have answered early (413) and closed: read that
                early = _early_reply(conn)
                if early is None:
                    raise _Transient(f"connection lost while sending ({_reason(error)})") from None
                return early
            try:
                response = conn.getresponse()
                data = response.read(MAX_REPLY_BYTES + 1)
            except TimeoutError:
                raise DeviceError(f"the device at {self.url} did not answer within "
                                  f"{self.read_timeout_s:g} s while {what}") from None
            except (OSError, http.client.HTTPException) as error:
                if idempotent:
                    raise _Transient(f"connection lost ({_reason(error)})") from None
                raise DeviceError(f"the device at {self.url} stopped answering while {what} "
                                  f"({_reason(error)})") from None
            return _Reply(response.status, _json(data), response.getheader("Retry-After") is not None)
        finally:
            conn.close()

    def _connection(self) -> http.client.HTTPConnection:
        if self._tls is not None:
            return http.client.HTTPSConnection(self._host, self._port, timeout=self.connect_timeout_s,
                                               context=self._tls)
        return http.client.HTTPConnection(self._host, self._port, timeout=self.connect_timeout_s)

    def _open(self, conn: http.client.HTTPConnection) -> None:
        try:
            conn.connect()
        except ssl.SSLCertVerificationError as error:
            raise DeviceError(f"the TLS certificate of {self.url} is not trusted ({error.verify_message}); "
                              "give the agent's certificate or its CA with --ca-file") from None
        except ssl.SSLError as error:
            raise DeviceError(f"TLS with {self.url} failed ({error.reason or error}); does the agent "
                              "run with --tls-cert/--tls-key?") from None
        except socket.gaierror as error:
            raise DeviceError(f"cannot resolve {self._host} ({error.strerror})") from None
        except OSError as error:  # refused, reset, unreachable, timed out: the agent may come up later
            raise _Transient(f"cannot connect ({_reason(error)})") from None
        conn.sock.settimeout(self.read_timeout_s)

    def _result(self, reply: _Reply, *, what: str, tries: str = "") -> dict:
        if reply.body is None:
            raise DeviceError(f"the device at {self.url} answered HTTP {reply.status} without a deploykit "
                              f"reply while {what} (is a deploykit agent listening there?)")
        if reply.status == 200:
            return reply.body
        cls = AuthError if reply.status == 401 else error_class(str(reply.body.get("type")))
        hint = " (check --token-file or $DEPLOYKIT_DEVICE_TOKEN)" if reply.status == 401 else ""
        raise cls(f"device {self.url}: {_message(reply)}{hint}" + (f" ({tries})" if tries else ""))


def describe_device(url: str, *, health: dict, targets: list[dict], fingerprint: dict) -> str:
    """What ``deploykit device URL`` prints: the agent, its queue, its targets and its machine. Every
    text the device sent is shown printable and cut (:func:`shown`): no escape sequence reaches the
    terminal and no device floods it."""
    f = fingerprint
    lines = [f"device {url}: deploykit {shown(health.get('deploykit_version'))}, "
             f"{'TLS' if health.get('tls') is True else 'no TLS'}, uploads up to "
             f"{_number(health.get('max_upload_bytes'), 2**20)} MB, "
             f"timeout {_number(health.get('timeout_s'))} s, queued {shown(health.get('queued'))}, "
             f"measuring {shown(health.get('measuring') or 'nothing')}",
             f"machine: {shown(f.get('hostname'))}, {shown(f.get('cpu'))} ({shown(f.get('arch'))}, "
             f"{shown(f.get('logical_cpus'))} logical CPUs), {shown(f.get('os'))}"]
    for row in targets:
        if row.get("served"):
            lines.append(f"  {shown(row['name'])}: served: {shown(row.get('runtime'))} "
                         f"{shown(row.get('runtime_version'))} on {shown(row.get('device_here'))}, "
                         f"{shown(row.get('precision'))}")
        else:
            lines.append(f"  {shown(row['name'])}: not served: {shown(row.get('reason'))}")
    return "\n".join(lines)


def shown(value, limit: int = SHOWN_CHARS) -> str:
    """A value a device sent, as printable text of at most ``limit`` characters: control characters
    (escape sequences, line breaks) become ``?``."""
    text = "".join(c if c.isprintable() else "?" for c in str(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _number(value, unit: float = 1.0) -> str:
    return f"{value / unit:g}" if is_number(value) else "?"


def describe_measurement(result: RemoteMeasurement) -> str:
    """One line per measurement, as ``deploykit device URL --measure`` prints it."""
    m = result.measurement
    return (f"{shown(result.name)} on {shown(result.target)} at {result.url}: median {m.median_ms:.4g} ms, "
            f"p90 {m.p90_ms:.4g} ms, cv {m.cv * 100:.1f}%, n {m.n} ({shown(result.runtime)} "
            f"{shown(result.runtime_version)} on {shown(result.device)}; queued {result.queued_s:.1f} s)")


def _parse_url(url: str) -> tuple[str, str, int, str, bool]:
    """``(url, host, port, path prefix, tls)``; a bad URL is a ConfigError."""
    parts = urlsplit(url.strip())
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port == -1 or parts.query:
        raise ConfigError(f"device URL must look like http://HOST:PORT or https://HOST:PORT, got {url!r}")
    port = port or DEFAULT_PORT
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    prefix = parts.path.rstrip("/")
    return f"{parts.scheme}://{host}:{port}{prefix}", parts.hostname, port, prefix, parts.scheme == "https"

def _tls_context(ca_file: str | Path | None) -> ssl.SSLContext:
    if ca_file is not None and not Path(ca_file).is_file():
        raise ConfigError(f"--ca-file not found: {ca_file}")
    try:
        return ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)
    except ssl.SSLError as error:
        raise ConfigError(f"cannot use --ca-file {ca_file}: {error.reason or error}") from None


def _early_reply(conn: http.client.HTTPConnection) -> _Reply | None:
    """The reply an agent sent before the request body was all sent, if it can still be read."""
    try:
        response = conn.getresponse()
        return _Reply(response.status, _json(response.read(MAX_REPLY_BYTES + 1)),
                      response.getheader("Retry-After") is not None)
    except (OSError, http.client.HTTPException):
        return None


def _json(data: bytes) -> dict | None:
    try:
        return parse_json(data, what="the agent's reply", max_bytes=MAX_REPLY_BYTES)
    except ConfigError:
        return None


def _message(reply: _Reply) -> str:
    """The error text a device sent, printable and cut (it ends up in the one line a command prints)."""
    if reply.body and isinstance(reply.body.get("error"), str):
        return shown(reply.body["error"], limit=2 * SHOWN_CHARS)
    return f"HTTP {reply.status}"


def _reason(error: BaseException) -> str:
    return getattr(error, "strerror", None) or str(error) or type(error).__name__
