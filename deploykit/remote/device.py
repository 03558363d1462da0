"""What a device agent serves on this machine: its targets, its fingerprint, and the upload check.

No web framework here: :mod:`deploykit.remote.server` puts these behind HTTP.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from deploykit.errors import ConfigError, ModelError, RuntimeUnavailableError, one_line
from deploykit.fileio import parse_json
from deploykit.remote.wire import DOCTORED_FINGERPRINT_ENV
from deploykit.targets import Target


@dataclass(frozen=True)
class ServedTargets:
    """The targets this agent measures (``served``), and every other known target with why not:
    ``unserved`` were left out by ``--targets``, ``unavailable`` cannot run on this machine."""

    served: dict[str, Target]
    unserved: dict[str, str] = field(default_factory=dict)  # target name → why not
    unavailable: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, names: Sequence[str] = ()) -> ServedTargets:
        """Serve ``names`` (target names or YAML paths), each of which must be available here; without
        names, serve every target in ``targets/`` that is available here. Nothing to serve is a
        RuntimeUnavailableError, as is a named target that cannot run here."""
        from deploykit.runtimes import availability
        from deploykit.targets import list_targets, load_target

        known = {target.name: target for target in list_targets()}
        if names:
            chosen = [load_target(name) for name in names]
            for target in chosen:
                ok, why = availability(target)
                if not ok:
                    raise RuntimeUnavailableError(f"cannot serve target {target.name}: {why}")
            served = {target.name: target for target in chosen}
            why_not = f"not served by this agent (it serves {', '.join(served)}; see its --targets)"
            return cls(served=served, unserved={name: why_not for name in known if name not in served})
        served, unavailable = {}, {}
        for name, target in known.items():
            ok, why = availability(target)
            if ok:
                served[name] = target
            else:
                unavailable[name] = why
        if not served:
            raise RuntimeUnavailableError("no target can be measured on this machine: "
                                          + "; ".join(f"{n}: {w}" for n, w in unavailable.items()))
        return cls(served=served, unavailable=unavailable)

    def require(self, name: str) -> Target:
        """The served target ``name``. Unknown or left out: ConfigError (the agent answers 404); known
        but unable to run here: RuntimeUnavailableError (503)."""
        if name in self.served:
            return self.served[name]
        if name in self.unavailable:
            why = self.unavailable[name]
            raise RuntimeUnavailableError(f"target {name} cannot run on this device: {why}")
        if name in self.unserved:
            raise ConfigError(f"target {name} is not served here: {self.unserved[name]}")
        raise ConfigError(f"unknown target {name!r} on this device; it serves {', '.join(self.served)}")

    def listing(self) -> list[dict]:
        """One row per known target, as ``deploykit targets --format json`` shows it, with ``served``;
        the rows of targets not served say why not (``available`` false: cannot run here)."""
        from deploykit.runtimes import describe

        rows = [{**describe(target), "served": True} for target in self.served.values()]
        rows += [{"name": name, "available": False, "served": False, "reason": why}
                 for name, why in self.unavailable.items()]
        rows += [{"name": name, "available": None, "served": False, "reason": why}
                 for name, why in self.unserved.items()]
        return sorted(rows, key=lambda row: row["name"])


def machine_fingerprint(targets: Iterable[Target], *, environ: Mapping[str, str] | None = None) -> dict:
    """What identifies this machine's measurements: host, CPU, OS, and for each target the runtime, its
    version, the device it runs on (:func:`deploykit.measure.client.runtime_info`) and the machine's
    :class:`deploykit.measure.fingerprint.Fingerprint` at the target's threads (``fingerprint``, as
    :meth:`Fingerprint.stored` keeps it): the same fingerprint a local profile records, so a table
    measured through the agent carries the device's.

    Test-only: ``$DEPLOYKIT_TEST_DOCTORED_FINGERPRINT`` (a JSON object of fingerprint fields) replaces
    those fields in every target's fingerprint (:func:`doctored_fields`)."""
    from deploykit import __version__
    from deploykit.measure.client import runtime_info
    from deploykit.measure.fingerprint import for_target
    from deploykit.runtimes import hostinfo

    doctored = doctored_fields(os.environ if environ is None else environ)
    per_target = {}
    for target in targets:
        fingerprint = replace(for_target(target, threads=target.threads), **doctored)
        per_target[target.name] = {**runtime_info(target), "fingerprint": fingerprint.stored()}
    return {
        "hostname": platform.node(),
        "arch": hostinfo.machine_arch(),
        "cpu": doctored.get("cpu", hostinfo.cpu_name()),
        "logical_cpus": os.cpu_count(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "deploykit_version": __version__,
        "targets": per_target,
    }


def doctored_fields(environ: Mapping[str, str]) -> dict:
    """The fingerprint fields ``$DEPLOYKIT_TEST_DOCTORED_FINGERPRINT`` overrides (test-only), else {}."""
    from dataclasses import fields

    from deploykit.measure.fingerprint import Fingerprint

    text = environ.get(DOCTORED_FINGERPRINT_ENV, "").strip()
    if not text:
        return {}
    try:
        data = parse_json(text, what=DOCTORED_FINGERPRINT_ENV)
    except ConfigError:
        data = None
    names = {f.name for f in fields(Fingerprint)}
    if not isinstance(data, dict) or not set(data) <= names:
        raise ConfigError(f"{DOCTORED_FINGERPRINT_ENV} must be a JSON object of fingerprint fields "
                          f"({', '.join(sorted(names))})")
    return data


def check_onnx_upload(path: Path) -> None:
    """Refuse (ModelError) anything but one self-contained ONNX model that passes the ONNX checker's
    full check (shape inference included). Runs before any runtime sees the file: external data
    anywhere in it (graph, subgraphs, functions, attribute tensors, sparse tensors) is refused before
    the checker runs, and the checker is given the file's path, so that anything it resolves is
    resolved in the upload's own private folder, never the agent's working directory."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # protobuf raises DecodeError and friends
        raise ModelError(f"the upload is not an ONNX model: {one_line(error)}") from None
    where = external_data_in(model)
    if where is not None:
        raise ModelError(f"the upload refers to external data ({where}); send one self-contained ONNX file")
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as error:  # ValidationError, InferenceError
        raise ModelError(f"the upload fails the ONNX checker: {one_line(error)}") from None


def external_data_in(message) -> str | None:
    """Where a protobuf message (an ONNX model) holds a tensor kept outside the file: the field path of
    the first one, else None. Walks every field of every nested message (the graph, its subgraphs,
    functions, attributes, sparse tensors, training info), so that no corner of the format is missed."""
    from onnx import TensorProto

    stack = [(message, "model")]
    while stack:
        current, where = stack.pop()
        if isinstance(current, TensorProto):
            if current.data_location == TensorProto.EXTERNAL or len(current.external_data):
                return f"{where} {current.name}".strip()
            continue  # a tensor nests no further tensor
        for descriptor, value in current.ListFields():
            if descriptor.type != descriptor.TYPE_MESSAGE:
                continue
            children = [value] if hasattr(value, "ListFields") else list(value)  # one, or a repeated field
            stack.extend((child, f"{where}.{descriptor.name}") for child in children)
    return None
