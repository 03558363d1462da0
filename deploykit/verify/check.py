"""The whole check: numerics, interleaved latency and the table's prediction, into one VerifyReport."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from deploykit.errors import ConfigError, ModelError, RuntimeUnavailableError
from deploykit.progress import Progress
from deploykit.verify.files import file_sha256, onnx_input_shape
from deploykit.verify.numerics import check_numerics
from deploykit.verify.report import VerifyReport
from deploykit.verify.timing import DEFAULT_ROUNDS, measure_interleaved


def verify(onnx_path: str | Path, *, target, protocol=None, reference: str | Path | None = None,
           torch_module=None, torch_name: str | None = None, table=None,
           pruned: Sequence[int] | None = None, allow_mismatch: bool = False, n_inputs: int = 4,
           seed: int = 0, rounds: int = DEFAULT_ROUNDS, measure_latency: bool = True,
           batch: int | None = None, input_size: tuple[int, int] | None = None,
           progress: Progress | None = None, host=None, paired: bool | None = None) -> VerifyReport:
    """Verify ``onnx_path`` on ``target``; see :mod:`deploykit.verify`. ``table`` is a LatencyTable.
    ``host`` (a :class:`deploykit.measure.host.MeasureHost`) is where the file runs and is timed:
    this machine by default, or a device agent (``--device URL``); PyTorch runs here either way.
    ``paired`` times the model beside the reference in one process per round (default: where a
    profile's end-to-end points would be, :func:`deploykit.latency.options.pairs_by_default`)."""
    from deploykit.latency.identity import open_table
    from deploykit.latency.options import pairs_by_default
    from deploykit.measure.host import host_or_local
    from deploykit.protocol import Protocol

    host = host_or_local(host)

    path = Path(onnx_path)
    if not path.is_file():
        raise ModelError(f"ONNX file not found: {path}")
    ref_path = Path(reference) if reference is not None else None
    if ref_path is not None and not ref_path.is_file():
        raise ModelError(f"reference ONNX file not found: {ref_path}")
    if table is not None and pruned is None:
        raise ConfigError("--table needs the pruned blocks: --pruned 0,3,5 or --subnet subnet.json "
                          "(--pruned '' for the unpruned model)")
    table_notes: list[str] = []
    if table is not None:  # another machine (fingerprint) is never refused: the measurement shows the error
        table = open_table(table, budget_unit=None, host=host,
                           say=lambda line: table_notes.append(line.removeprefix("note: ")))
    ok, reason = host.availability(target)
    if not ok:
        raise RuntimeUnavailableError(f"cannot verify on target {target.name} {host.where}: {reason}")
    info = host.runtime_info(target)
    shape = onnx_input_shape(path, batch=batch, input_size=input_size, default_batch=target.batch,
                             default_size=target.input_size)
    if ref_path is not None:
        ref_shape = onnx_input_shape(ref_path, batch=shape[0], input_size=shape[2:])
        if ref_shape != shape:
            raise ConfigError(f"{ref_path} takes input {list(ref_shape)}, {path} {list(shape)}")
    notes: list[str] = []
    protocol = protocol or Protocol()
    target, how = settled_target(target, path, shape, protocol=protocol, table=table, host=host,
                                  progress=progress, timed=measure_latency)
    notes.append(f"run settings: {target.settings.describe()} ({how})")

    predicted = mismatches = None
    if table is not None:
        mismatches = table.check_matches(target=target, batch=shape[0], input_size=tuple(shape[2:]),
                                         allow_mismatch=allow_mismatch)
        notes += table_notes
        predicted = table.predict(tuple(pruned))
        if table.meta.mode != "measured":
            notes.append(f"the table is {table.meta.mode} (roofline), not measured")

    numerics = None
    if torch_module is not None:
        if progress:
            progress(f"numerics: {n_inputs} seeded input(s) of shape {list(shape)}")
        numerics = check_numerics(path, torch_module, target=target, input_shape=shape,
                                  n_inputs=n_inputs, seed=seed, host=host)

    latency = speedup = error_pct = None
    if measure_latency:
        if paired is None:
            paired = pairs_by_default(target, local=host.url is None)
        latency = measure_interleaved(path, ref_path, target=target, protocol=protocol,
                                      input_shape=shape, rounds=rounds, progress=progress, host=host,
                                      paired=paired)
        if latency.get("paired"):
            notes.append("latency paired: the model timed as a ratio to the reference in one process per "
                         "round; its ms = that ratio × the reference's median over the rounds")
        model_ms = latency["model"]["median_ms"]
        speedup = latency["speedup"]
        if predicted is not None and model_ms > 0:
            error_pct = (predicted - model_ms) / model_ms * 100.0
    else:
        notes.append("latency not measured (--numerics-only)")

    return VerifyReport(
        target=target.name, device=info["device"], runtime=info["runtime"],
        runtime_version=info["runtime_version"], provider=target.provider, precision=target.precision,
        input_shape=tuple(shape), model=str(path), model_sha256=file_sha256(path),
        reference=None if ref_path is None else str(ref_path),
        reference_sha256=None if ref_path is None else file_sha256(ref_path),
        torch_model=torch_name, numerics=numerics, latency=latency,
        protocol=protocol.as_dict() if measure_latency else None,
        table=None if table is None else str(table.path), pruned=None if pruned is None else tuple(pruned),
        predicted_ms=predicted, prediction_error_pct=error_pct, table_mismatches=tuple(mismatches or ()),
        speedup=speedup, passed=None if numerics is None else numerics["passed"], notes=tuple(notes),
        device_url=host.url)


def check_torch_options(*, torch_model: str | Path | None, weights: str | Path | None,
                        numerics_only: bool) -> None:
    """The options that need a PyTorch model to compare with (``--torch``), checked before anything
    is opened."""
    if weights is not None and torch_model is None:
        raise ConfigError("--weights goes with --torch MODEL_NAME")
    if numerics_only and torch_model is None:
        raise ConfigError("--numerics-only needs --torch (the model to compare with)")


def verify_files(onnx_path: str | Path, *, target, table_file: str | Path | None = None,
                 subnet_file: str | Path | None = None, pruned: str | None = None,
                 torch_model: str | Path | None = None, weights: str | Path | None = None,
                 unsafe_pickle: bool = False, numerics_only: bool = False,
                 batch: int | None = None, input_size: tuple[int, int] | None = None,
                 note: Callable[[str], None] | None = None, **options: Any) -> VerifyReport:
    """:func:`verify` from what ``deploykit verify`` is given: the latency table's file, the pruned
    blocks as a ``subnet_file`` (of the table's model) or a block list ``pruned`` (``''``: none), and
    the PyTorch model to compare with as anything :func:`deploykit.modelfile.load_module` takes (built
    for the ONNX file's input size unless ``input_size``); ``note`` hears the loader's notes.
    ``numerics_only`` measures no latency; ``options`` go to :func:`verify` as they are."""
    from deploykit.latency.table import LatencyTable
    from deploykit.subnet import Subnet, parse_block_list

    check_torch_options(torch_model=torch_model, weights=weights, numerics_only=numerics_only)
    table = LatencyTable.read(table_file) if table_file is not None else None  # verify opens it for use
    blocks = None
    if subnet_file is not None:
        subnet = Subnet.read(subnet_file)
        if table is not None and subnet.model != table.meta.model:
            raise ConfigError(f"{subnet_file} is for {subnet.model}, the table for {table.meta.model}")
        blocks = subnet.pruned
    elif pruned is not None:
        blocks = parse_block_list(pruned)
    module = name = None
    if torch_model is not None:
        from deploykit.modelfile import load_module

        size = input_size
        if size is None and os.path.isfile(onnx_path):  # a timm ViT is built for the file's size
            size = onnx_input_shape(onnx_path, batch=batch, default_batch=target.batch,
                                    default_size=target.input_size)[2:]
        loaded = load_module(torch_model, weights=weights, input_size=size, unsafe_pickle=unsafe_pickle)
        for text in loaded.notes if note is not None else ():
            note(text)
        module, name = loaded.module, loaded.description
    return verify(onnx_path, target=target, torch_module=module, torch_name=name, table=table,
                  pruned=blocks, measure_latency=not numerics_only, batch=batch, input_size=input_size,
                  **options)


def settled_target(target, path: Path, shape, *, protocol, table, host, progress: Progress | None,
                   timed: bool = True):
    """``target`` with the run settings to verify with, and where they come from: the table's (a table
    is used only with its own), else ``MODEL.settings.json`` beside the file, else the probe's choice
    for what the target leaves to ``auto`` — no probe where nothing is ``timed`` (numerics only: what
    ``auto`` leaves, the runtime decides). An explicit setting that differs from the table's or the
    file's is a ConfigError."""
    from deploykit.deployment import read_settings, settings_path
    from deploykit.latency.identity import with_table_settings
    from deploykit.latency.probe import settle
    from deploykit.runsettings import require_same

    asked = protocol.explicit_settings()
    if table is not None:
        return with_table_settings(target, table, asked), f"as {table.path or 'the table'} was measured"
    deployment = read_settings(path, target.name)
    if deployment is not None and deployment.target == target.name:
        source = next(p for p in (settings_path(path, target.name), settings_path(path)) if p.is_file())
        require_same(asked, deployment.settings, source=str(source),
                     remedy="drop the option, or remove the settings file to verify with other settings")
        return target.with_settings(deployment.settings), f"from {source.name}"
    target = protocol.apply_settings(target)
    if not target.auto_settings:
        return target.with_settings(target.settings), "the target's"
    if not timed:
        return target.with_settings(target.settings), "the runtime's defaults for auto (nothing timed)"
    settled, _ = settle(target, path, input_shape=shape, protocol=protocol, host=host,
                        say=progress or (lambda line: None))
    return settled, "chosen by the settings probe"
