"""What travels between the device agent and its client: JSON and ONNX bytes, never anything else.

A measure request is one POST whose body is the ONNX file and whose ``X-DeployKit-Request`` header is
the JSON of :class:`MeasureRequest`; a run request (verify's numerics: the file's outputs on seeded
inputs, drawn from the seed on both sides) the same with :class:`RunRequest`, answered with the
outputs as encoded arrays (:class:`deploykit.measure.outputs.SeededOutputs`; numbers only). Every
error reply is ``{"error": one line, "type": DeployKitError subclass name}``; the client raises the
same subclass again (:func:`deploykit.errors.error_class`).
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

from deploykit.checks import require_number
from deploykit.errors import ConfigError, DeployKitError, one_line
from deploykit.fileio import parse_json
from deploykit.measure.outputs import check_run_request
from deploykit.protocol import Measurement, Protocol
from deploykit.shapes import check_input_shape

API_VERSION = 2  # bumped whenever a request or reply changes incompatibly (2: /run, real fingerprints)
DEFAULT_PORT = 8765
REQUEST_HEADER = "X-DeployKit-Request"
TOKEN_ENV = "DEPLOYKIT_DEVICE_TOKEN"
MIN_TOKEN_CHARS = 16
MAX_TOKEN_FILE_BYTES = 4096
TOKEN_HINT = "python -c 'import secrets; print(secrets.token_urlsafe(32))' > FILE && chmod 600 FILE"
_NAME_CHARS = 100
MAX_REPLY_BYTES = 1024 * 2**20  # the most a client reads of a reply (an agent's --max-reply-mb is less)
MAX_HEADER_BYTES = 16 * 1024   # a request header's JSON: a few hundred bytes in practice
# Test-only: a JSON object of fingerprint fields the agent reports instead of its own (the tests play
# "another machine answers at the same URL" with it). The agent warns loudly when it is set.
DOCTORED_FINGERPRINT_ENV = "DEPLOYKIT_TEST_DOCTORED_FINGERPRINT"


@dataclass(frozen=True)
class MeasureRequest:
    """One measurement: which served target, the full input shape (batch first), the protocol, an
    optional timeout (the agent's own ``--timeout`` caps it) and the file's name (for logs only)."""

    kind: ClassVar[str] = "measure"
    target: str
    input_shape: tuple[int, ...]
    protocol: Protocol
    timeout_s: float | None = None
    name: str = "model.onnx"

    def __post_init__(self) -> None:
        _check_common(self, "measure")
        if not isinstance(self.protocol, Protocol):
            raise ConfigError("measure request: protocol must be a Protocol")

    def as_header(self) -> str:
        """The request as one line of ASCII JSON, for the request header."""
        return json.dumps({"target": self.target, "input_shape": list(self.input_shape),
                           "protocol": self.protocol.as_dict(), "timeout_s": self.timeout_s,
                           "name": self.name})

    @classmethod
    def from_header(cls, text: str | None) -> MeasureRequest:
        """Inverse of :meth:`as_header`; anything malformed is a ConfigError."""
        data = _header_fields(text, "measure", required={"target", "input_shape", "protocol"},
                              known={"target", "input_shape", "protocol", "timeout_s", "name"})
        if not isinstance(data["protocol"], Mapping):
            raise ConfigError("measure request: protocol must be a JSON object")
        return cls(target=data["target"], input_shape=_shape(data["input_shape"]),
                   protocol=Protocol.from_dict(data["protocol"]), timeout_s=data.get("timeout_s"),
                   name=data.get("name") or "model.onnx")


@dataclass(frozen=True)
class RunRequest:
    """Run one file on ``n_inputs`` inputs drawn from ``seed`` (verify's numerics), on a served target."""

    kind: ClassVar[str] = "run"
    target: str
    input_shape: tuple[int, ...]
    seed: int
    n_inputs: int
    timeout_s: float | None = None
    name: str = "model.onnx"

    def __post_init__(self) -> None:
        _check_common(self, "run")
        check_run_request(self.n_inputs, self.seed)

    def as_header(self) -> str:
        return json.dumps({"target": self.target, "input_shape": list(self.input_shape), "seed": self.seed,
                           "n_inputs": self.n_inputs, "timeout_s": self.timeout_s, "name": self.name})

    @classmethod
    def from_header(cls, text: str | None) -> RunRequest:
        data = _header_fields(text, "run", known={"target", "input_shape", "seed", "n_inputs", "timeout_s",
                                                  "name"},
                              required={"target", "input_shape", "seed", "n_inputs"})
        return cls(target=data["target"], input_shape=_shape(data["input_shape"]), seed=data["seed"],
                   n_inputs=data["n_inputs"], timeout_s=data.get("timeout_s"),
                   name=data.get("name") or "model.onnx")


def _check_common(order, kind: str) -> None:
    """Check (and normalize) what every request has: target, input shape, timeout, file name."""
    if not isinstance(order.target, str) or not order.target:
        raise ConfigError(f"{kind} request: target must be a target name, got {order.target!r}")
    object.__setattr__(order, "input_shape", check_input_shape(order.input_shape))
    if order.timeout_s is not None:
        require_number(f"{kind} request: timeout_s", order.timeout_s, above=0)
    object.__setattr__(order, "name", _printable(str(order.name))[:_NAME_CHARS] or "model.onnx")


def _header_fields(text: str | None, kind: str, *, known: set[str], required: set[str]) -> dict:
    if not text:
        raise ConfigError(f"{kind} request without its {REQUEST_HEADER} header")
    data = parse_json(text, what=f"{kind} request header", max_bytes=MAX_HEADER_BYTES, max_depth=8)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{kind} request: unknown key(s) {', '.join(unknown)}")
    missing = sorted(required - set(data))
    if missing:
        raise ConfigError(f"{kind} request: missing key(s) {', '.join(missing)}")
    return data


def _shape(value):
    return tuple(value) if isinstance(value, list) else value


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None: JSON has no nan (a measurement with too
    few runs for an interval has nan bounds), and the agent's replies are strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def measurement_from_wire(data: Mapping[str, Any]) -> Measurement:
    """A Measurement from a reply: the nulls :func:`json_safe` made are nan again."""
    numbers = {f.name for f in fields(Measurement) if f.type in ("float", float)}
    return Measurement.from_dict({key: math.nan if key in numbers and value is None else value
                                  for key, value in data.items()})


def error_reply(error: DeployKitError) -> dict[str, str]:
    """The JSON body of an error reply: one line and the error's class name."""
    return {"error": one_line(error, limit=500), "type": type(error).__name__}


def read_token(path: str | Path, *, private: bool = False) -> tuple[str, str | None]:
    """The token in ``path`` and a warning when others may read the file (else None); ``private``
    (the agent's own token): such a file is refused instead.

    A missing, unreadable, empty or too short token file is a ConfigError, and so is anything but a
    small regular file (a FIFO, /dev/zero, a folder): an agent never runs without a real token, and a
    client never sends an empty one.
    """
    file = Path(path).expanduser()
    try:  # opened without blocking (a FIFO), then judged by what was opened (no race with a swap)
        handle = os.open(file, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ConfigError(f"no token file at {file}; create one: {TOKEN_HINT}") from None
    except OSError as error:
        raise ConfigError(f"cannot read the token file {file}: {error.strerror or error}") from None
    with os.fdopen(handle, "rb") as stream:
        info = os.fstat(handle)
        _check_token_file(file, info, private=private)
        try:
            token = stream.read(MAX_TOKEN_FILE_BYTES + 1).decode("utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"cannot read the token file {file}: "
                              f"{getattr(error, 'strerror', None) or error}") from None
    if not token:
        raise ConfigError(f"the token file {file} is empty; create a token: {TOKEN_HINT}")
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() or not c.isprintable() for c in token):
        raise ConfigError(f"the token in {file} must be one word of at least {MIN_TOKEN_CHARS} printable "
                          f"characters; create one: {TOKEN_HINT}")
    shared = _shared(info)
    warning = f"the token file {file} is readable by other users (chmod 600 {file})" if shared else None
    return token, warning


def _check_token_file(file: Path, info: os.stat_result, *, private: bool) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"the token file {file} is not a regular file; create one: {TOKEN_HINT}")
    if info.st_size > MAX_TOKEN_FILE_BYTES:
        raise ConfigError(f"the token file {file} is {info.st_size} bytes, over {MAX_TOKEN_FILE_BYTES}: "
                          f"a token file holds one token; create one: {TOKEN_HINT}")
    if private and _shared(info):
        raise ConfigError(f"the token file {file} is readable by other users: chmod 600 {file}")


def _shared(info: os.stat_result) -> bool:
    return os.name == "posix" and bool(info.st_mode & (stat.S_IRGRP | stat.S_IROTH))


def token_from(token_file: str | Path | None, *, environ: Mapping[str, str] | None = None) -> str:
    """A client's token: from ``token_file`` if given, else ``$DEPLOYKIT_DEVICE_TOKEN``."""
    if token_file is not None:
        return read_token(token_file)[0]
    token = (os.environ if environ is None else environ).get(TOKEN_ENV, "").strip()
    if not token:
        raise ConfigError(f"no device token: give --token-file FILE or set {TOKEN_ENV}")
    return token


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() and c not in "\r\n" else "?" for c in text).strip()
