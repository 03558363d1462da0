"""The latency worker: ``python -m deploykit.measure.worker`` times one ONNX file and exits.

Reads one JSON request on stdin (``onnx_path``, ``target`` as :meth:`Target.as_dict`, ``protocol`` as
:meth:`Protocol.as_dict`, ``input_shape``) and writes one JSON line on stdout: ``{"ok": true,
"measurement": {...}, "runtime_version": ..., "device": ..., "affinity": [cpus] or null}`` or
``{"ok": false, "type": "<DeployKitError subclass>", "error": "<one line>"}``. A request with
``"action": "run"`` (and ``seed``, ``n_inputs`` instead of ``protocol``) runs the file on seeded inputs
instead and replies with :meth:`deploykit.measure.outputs.SeededOutputs.as_dict` (verify's numerics on a
device agent, :func:`deploykit.measure.client.run_outputs`). A request with ``"reference_path"`` times
the file as a ratio to that reference in the same process (:mod:`deploykit.paired`) and replies with
``"paired"`` (:meth:`PairedMeasurement.as_dict`) in place of ``"measurement"``. Whatever the runtimes
print goes to stderr, so stdout carries the reply only. Started by
:func:`deploykit.measure.client.measure_onnx`.

Before the runtime starts its thread pool, the process pins itself to a fixed CPU set matching the
thread count (:func:`deploykit.runtimes.hostinfo.pinned_cores`), so every measurement runs on the same
cores; where the OS has no affinity API it runs unpinned and says so (``affinity`` null).
"""

from __future__ import annotations

import json
import os
import sys
import traceback


def handle(request: dict, *, pin: bool = False) -> dict:
    """Run one measurement request; the reply as a dict. With ``pin`` (the worker process, never a
    caller that handles a request in its own process) the process is pinned to its cores first."""
    from deploykit.errors import ConfigError
    from deploykit.protocol import Protocol
    from deploykit.runtimes import check_target, hostinfo
    from deploykit.targets import target_from_dict

    run = request.get("action", "measure") == "run"
    try:
        target = target_from_dict(request["target"])
        onnx_path, input_shape = request["onnx_path"], tuple(request["input_shape"])
        protocol = None if run else Protocol.from_dict(request["protocol"])
        seeds = (request["seed"], request["n_inputs"]) if run else None
    except (KeyError, TypeError) as error:
        raise ConfigError(f"malformed latency worker request: {error!r}") from None
    if seeds is not None:
        return _run(target, onnx_path, input_shape, *seeds)
    backend = check_target(target)
    target = protocol.apply_settings(target)
    affinity = hostinfo.pin_to_cores(target.threads) if pin else None
    reference = request.get("reference_path")
    if reference is not None:
        paired = backend.profile_paired(onnx_path, str(reference), target=target, protocol=protocol,
                                        input_shape=input_shape)
        result = {"paired": paired.as_dict()}
    else:
        measurement = backend.profile(onnx_path, target=target, protocol=protocol, input_shape=input_shape)
        result = {"measurement": measurement.as_dict()}
    return {"ok": True, **result, "runtime_version": backend.version(),
            "device": backend.device_string(target), "affinity": list(affinity) if affinity else None}


def _run(target, onnx_path: str, input_shape: tuple[int, ...], seed, n_inputs) -> dict:
    from deploykit.measure.outputs import run_seeded

    result = run_seeded(onnx_path, target=target, input_shape=input_shape, seed=seed, n_inputs=n_inputs)
    return {"ok": True, **result.as_dict()}


def main() -> int:
    reply_stream = os.fdopen(os.dup(1), "w")  # the real stdout, for the reply only
    os.dup2(2, 1)  # anything else written to fd 1, by Python or by a runtime's C++ code, goes to stderr
    sys.stdout = sys.stderr
    try:
        from deploykit.errors import DeployKitError, one_line
        from deploykit.fileio import parse_json

        try:
            request = parse_json(sys.stdin.read(), what="the latency worker request")
        except DeployKitError as error:
            reply = {"ok": False, "type": "ConfigError", "error": f"bad latency worker request: {error}"}
        else:
            try:
                reply = handle(request, pin=True)
            except DeployKitError as error:
                reply = {"ok": False, "type": type(error).__name__, "error": str(error)}
            except Exception as error:  # a bug or an SDK failure: keep the traceback on stderr
                traceback.print_exc()
                reply = {"ok": False, "type": "DeployKitError",
                         "error": f"latency worker failed: {type(error).__name__}: {one_line(error)}"}
        reply_stream.write(json.dumps(reply) + "\n")
        reply_stream.flush()
        return 0 if reply["ok"] else 1
    finally:
        reply_stream.close()


if __name__ == "__main__":
    sys.exit(main())
