"""What travels between the device agent and its client: JSON and ONNX bytes, never anything else.

A measure request is one POST whose body is the ONNX file and whose ``X-DeployKit-Request`` header is
the JSON of :class:`MeasureRequest`. Every error reply is ``{"error": one line, "type": DeployKitError
subclass name}``; the client raises the same subclass again (:func:`deploykit.errors.error_class`).
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from deploykit.errors import ConfigError, DeployKitError, one_line
from deploykit.protocol import Protocol
from deploykit.shapes import check_input_shape

API_VERSION = 1  # bumped whenever a request or reply changes incompatibly
DEFAULT_PORT = 8765
REQUEST_HEADER = "X-DeployKit-Request"
TOKEN_ENV = "DEPLOYKIT_DEVICE_TOKEN"
MIN_TOKEN_CHARS = 16
TOKEN_HINT = "python -c 'import secrets; print(secrets.token_urlsafe(32))' > FILE && chmod 600 FILE"
_NAME_CHARS = 100


@dataclass(frozen=True)
class MeasureRequest:
    """One measurement: which served target, the full input shape (batch first), the protocol, an
    optional timeout (the agent's own ``--timeout`` caps it) and the file's name (for logs only)."""

    target: str
    input_shape: tuple[int, ...]
    protocol: Protocol
    timeout_s: float | None = None
    name: str = "model.onnx"

    def __post_init__(self) -> None:
        if not isinstance(self.target, str) or not self.target:
            raise ConfigError(f"measure request: target must be a target name, got {self.target!r}")
        object.__setattr__(self, "input_shape", check_input_shape(self.input_shape))
        if not isinstance(self.protocol, Protocol):
            raise ConfigError("measure request: protocol must be a Protocol")
        if self.timeout_s is not None and (isinstance(self.timeout_s, bool)
                                           or not isinstance(self.timeout_s, (int, float))
                                           or not math.isfinite(self.timeout_s) or self.timeout_s <= 0):
            raise ConfigError(f"measure request: timeout_s must be a positive number, got {self.timeout_s!r}")
        object.__setattr__(self, "name", _printable(str(self.name))[:_NAME_CHARS] or "model.onnx")

    def as_header(self) -> str:
        """The request as one line of ASCII JSON, for the request header."""
        return json.dumps({"target": self.target, "input_shape": list(self.input_shape),
                           "protocol": self.protocol.as_dict(), "timeout_s": self.timeout_s,
                           "name": self.name})

    @classmethod
    def from_header(cls, text: str | None) -> MeasureRequest:
        """Inverse of :meth:`as_header`; anything malformed is a ConfigError."""
        if not text:
            raise ConfigError(f"measure request without its {REQUEST_HEADER} header")
        try:
            data = json.loads(text)
        except ValueError as error:
            raise ConfigError(f"measure request header is not JSON: {error}") from None
        if not isinstance(data, dict):
            raise ConfigError("measure request header must be a JSON object")
        known = {"target", "input_shape", "protocol", "timeout_s", "name"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"measure request: unknown key(s) {', '.join(unknown)}")
        missing = sorted({"target", "input_shape", "protocol"} - set(data))
        if missing:
            raise ConfigError(f"measure request: missing key(s) {', '.join(missing)}")
        if not isinstance(data["protocol"], Mapping):
            raise ConfigError("measure request: protocol must be a JSON object")
        shape = data["input_shape"]
        return cls(target=data["target"], input_shape=tuple(shape) if isinstance(shape, list) else shape,
                   protocol=Protocol.from_dict(data["protocol"]), timeout_s=data.get("timeout_s"),
                   name=data.get("name") or "model.onnx")


def error_reply(error: DeployKitError) -> dict[str, str]:
    """The JSON body of an error reply: one line and the error's class name."""
    return {"error": one_line(error, limit=500), "type": type(error).__name__}


def read_token(path: str | Path) -> tuple[str, str | None]:
    """The token in ``path`` and a warning when others may read the file (else None).

    A missing, unreadable, empty or too short token file is a ConfigError: an agent never runs
    without a real token, and a client never sends an empty one.
    """
    file = Path(path).expanduser()
    try:
        token = file.read_text(encoding="utf-8").strip()
        mode = file.stat().st_mode
    except FileNotFoundError:
        raise ConfigError(f"no token file at {file}; create one: {TOKEN_HINT}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read the token file {file}: {getattr(error, 'strerror', None) or error}") \
            from None
    if not token:
        raise ConfigError(f"the token file {file} is empty; create a token: {TOKEN_HINT}")
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() or not c.isprintable() for c in token):
        raise ConfigError(f"the token in {file} must be one word of at least {MIN_TOKEN_CHARS} printable "
                          f"characters; create one: {TOKEN_HINT}")
    warning = None
    if os.name == "posix" and mode & (stat.S_IRGRP | stat.S_IROTH):
        warning = f"the token file {file} is readable by other users (chmod 600 {file})"
    return token, warning


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
