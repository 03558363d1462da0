"""Targets seen from the runtimes: can a registered backend serve this target, and can it run here?

Target files are parsed without asking any runtime (:mod:`deploykit.targets`); these checks run where
a target is used (``deploykit targets``, profile, verify, the pipeline, the latency worker).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from deploykit.runsettings import SETTING_KEYS
from deploykit.runtimes.registry import backends
from deploykit.targets import SOURCE_FILE, target_source

if TYPE_CHECKING:
    from deploykit.runtimes.base import RuntimeBackend
    from deploykit.targets import Target


def check_target(target: Target) -> RuntimeBackend:
    """The backend that serves ``target``; a ConfigError naming the target's file and key when no
    registered runtime has its name or the runtime cannot serve it as written."""
    known = backends()
    if target.runtime not in known:
        raise target.error("runtime", f"unknown runtime {target.runtime!r} "
                                      f"(known: {', '.join(sorted(known))})")
    backend = known[target.runtime]
    backend.validate_target(target)
    return backend


def availability(target: Target) -> tuple[bool, str]:
    """``(True, "")`` when ``target`` can be profiled on this machine, else ``(False, why + hint)``;
    a target no runtime can serve as written is a ConfigError (:func:`check_target`)."""
    return check_target(target).available(target)


def describe(target: Target) -> dict:
    """What ``deploykit targets`` shows for one target: its settings and whether it can run here."""
    backend = check_target(target)
    ok, reason = backend.available(target)
    row = {"name": target.name, "device": target.device, "runtime": target.runtime,
           "provider": target.provider, "runtime_device": target.runtime_device,
           "precision": target.precision, "batch": target.batch, "input_size": list(target.input_size),
           **{key: target.as_dict()[key] for key in SETTING_KEYS}, "available": ok, "reason": reason,
           "path": target.path,
           "source": target_source(target)}
    if ok:
        row["runtime_version"] = backend.version()
        row["device_here"] = backend.device_string(target)
    return row


def format_targets(rows: list[dict]) -> str:
    """A table of :func:`describe` rows; each target that cannot run here is followed by why not."""
    header = ("target", "from", "runtime", "precision", "batch", "input", "stands for", "here")
    table = [header]
    for row in rows:
        source = row["path"] if row["source"] == SOURCE_FILE else row["source"]
        runtime = row["runtime"] + (f" / {row['provider']}" if row["provider"] else "")
        if row["runtime_device"]:
            runtime += f" ({row['runtime_device']})"
        here = (f"yes: {row['device_here']}, {row['runtime']} {row['runtime_version']}"
                if row["available"] else "no")
        table.append((row["name"], source, runtime, row["precision"], str(row["batch"]),
                      "x".join(map(str, row["input_size"])), row["device"], here))
    widths = [max(len(line[i]) for line in table) for i in range(len(header) - 1)]
    lines = []
    for index, line in enumerate(table):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(line, widths)) + "  " + line[-1])
        if index and not rows[index - 1]["available"]:
            lines.append(f"    why not: {rows[index - 1]['reason']}")
    return "\n".join(lines)
