"""What makes latency comparable between two machines: a fingerprint of the machine and its runtime.

A latency table is only as good as the machine it was measured on: the same CPU name can hide another
core count, another ISA (AVX-512, AMX), another memory size or another kernel, and a runtime upgrade
changes kernels. :class:`Fingerprint` records those facts (read from ``/proc/cpuinfo``,
``/proc/meminfo``, ``os`` and ``platform``; no dependency, no subprocess) together with the runtime, its
version, the provider/device and the thread count, and :meth:`Fingerprint.id` hashes them into a
stable id. :func:`differences` says, one line per aspect, exactly what differs between two of them.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

from deploykit.errors import TableError
from deploykit.runtimes import hostinfo

# The instruction-set extensions that change which kernels a runtime picks (x86 and Arm).
ISA_FLAGS = (
    "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
    "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16", "amx_fp16",
    "neon", "asimd", "asimddp", "asimdhp", "i8mm", "bf16", "sve", "sve2", "sme",
)
NOT_INSTALLED = "not installed"


@dataclass(frozen=True)
class Fingerprint:
    """One machine + runtime, as far as latency is concerned. Every field takes part in :meth:`id`."""

    cpu: str
    arch: str
    physical_cores: int | None
    logical_cores: int | None
    usable_cores: int | None        # the CPUs this process may run on (affinity, containers)
    isa: tuple[str, ...]
    memory_gib: int | None          # MemTotal rounded to whole GiB (the kernel's reservations vary)
    os: str
    kernel: str
    runtime: str
    runtime_version: str
    provider: str | None
    device: str                     # the device string the runtime backend reports
    threads: int | None             # intra-op threads (None: the runtime's default)
    # The other run settings (deploykit.runsettings), e.g. "spinning=off"; None: the runtime's
    # defaults (left out of as_dict then, so fingerprints from before settings keep their id).
    settings: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "isa", tuple(sorted(set(self.isa))))

    @property
    def id(self) -> str:
        """A stable 16-hex-digit hash of every field."""
        text = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["isa"] = list(self.isa)
        if data["settings"] is None:
            del data["settings"]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fingerprint:
        """Inverse of :meth:`as_dict` (an ``id`` key, as tables store it, is checked and dropped)."""
        if not isinstance(data, Mapping):
            raise TableError(f"a fingerprint must be a JSON object, got {data!r}")
        values = {k: v for k, v in data.items() if k != "id"}
        names = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is MISSING}
        missing, unknown = sorted(required - set(values)), sorted(set(values) - names)
        if missing or unknown:
            raise TableError(f"malformed fingerprint: missing {missing or 'nothing'}, "
                             f"unknown {unknown or 'nothing'}")
        fingerprint = cls(**{**values, "isa": tuple(values["isa"] or ())})
        if "id" in data and data["id"] != fingerprint.id:
            raise TableError(f"fingerprint id {data['id']!r} does not match its fields "
                             f"(they hash to {fingerprint.id!r}): the metadata was edited")
        return fingerprint

    def stored(self) -> dict[str, Any]:
        """What a table's metadata keeps: the fields and the id."""
        return {**self.as_dict(), "id": self.id}

    def cores(self) -> str:
        """``8 cores, 16 logical, 2 usable`` (what is known)."""
        parts = []
        if self.physical_cores is not None:
            parts.append(f"{self.physical_cores} cores")
        if self.logical_cores is not None and self.logical_cores != self.physical_cores:
            parts.append(f"{self.logical_cores} logical")
        if self.usable_cores is not None and self.usable_cores != self.logical_cores:
            parts.append(f"{self.usable_cores} usable")
        return ", ".join(parts) or "cores unknown"


# --- this machine ----------------------------------------------------------------------------------

def this_machine(*, runtime: str, runtime_version: str, provider: str | None, device: str,
                 threads: int | None, settings: str | None = None, proc: Path = Path("/proc")) -> Fingerprint:
    """The fingerprint of this machine for the given runtime facts (see :func:`for_target`)."""
    cpuinfo = _read(proc / "cpuinfo")
    return Fingerprint(cpu=hostinfo.cpu_name(), arch=hostinfo.machine_arch(),
                       physical_cores=physical_cores(cpuinfo), logical_cores=os.cpu_count(),
                       usable_cores=_usable_cores(), isa=isa_flags(cpuinfo),
                       memory_gib=memory_gib(_read(proc / "meminfo")), os=platform.system(),
                       kernel=platform.release(), runtime=runtime, runtime_version=runtime_version,
                       provider=provider, device=device, threads=threads, settings=settings)


def settings_text(target: Any) -> str | None:
    """The target's run settings other than threads as the fingerprint keeps them (``spinning=off``)."""
    given = {k: v for k, v in target.settings.given().items() if k != "threads"}
    if not given:
        return None
    shown = {True: "on", False: "off"}
    return ",".join(f"{k}={shown.get(v, v) if isinstance(v, bool) else v}" for k, v in sorted(given.items()))


def for_target(target: Any, *, threads: int | None) -> Fingerprint:
    """This machine's fingerprint when it runs ``target`` with ``threads``. A runtime that is not
    installed here gets runtime version ``not installed`` (so it differs from any measuring machine)."""
    from deploykit.errors import DeployKitError
    from deploykit.measure.client import runtime_info

    try:
        info = runtime_info(target)
    except DeployKitError:
        info = {"runtime": target.runtime, "runtime_version": NOT_INSTALLED, "device": NOT_INSTALLED}
    return this_machine(runtime=info["runtime"], runtime_version=info["runtime_version"],
                       provider=target.provider, device=info["device"], threads=threads,
                       settings=settings_text(target))


def physical_cores(cpuinfo: str) -> int | None:
    """Distinct (physical id, core id) pairs in ``/proc/cpuinfo``; else the sysfs topology; else None."""
    pairs, current = set(), {}
    for line in [*cpuinfo.splitlines(), ""]:
        key, sep, value = line.partition(":")
        if not sep:  # a blank line ends one processor's record
            if "core id" in current:
                pairs.add((current.get("physical id", "0"), current["core id"]))
            current = {}
            continue
        current[key.strip()] = value.strip()
    if pairs:
        return len(pairs)
    return _sysfs_physical_cores()


def _sysfs_physical_cores(root: Path = Path("/sys/devices/system/cpu")) -> int | None:
    cores = set()
    for topology in root.glob("cpu[0-9]*/topology"):
        package, core = _read(topology / "physical_package_id").strip(), _read(topology / "core_id").strip()
        if core:
            cores.add((package, core))
    return len(cores) or None


def isa_flags(cpuinfo: str) -> tuple[str, ...]:
    """The :data:`ISA_FLAGS` the first processor lists (``flags`` on x86, ``Features`` on Arm)."""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            present = set(value.split())
            return tuple(flag for flag in ISA_FLAGS if flag in present)
    return ()


def memory_gib(meminfo: str) -> int | None:
    """``MemTotal`` in whole GiB."""
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            try:
                return round(int(line.split()[1]) / 1024 ** 2)
            except (IndexError, ValueError):
                return None
    if hasattr(os, "sysconf"):
        try:
            return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024 ** 3)
        except (ValueError, OSError):
            return None
    return None


def _usable_cores() -> int | None:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count()


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


# --- comparing -------------------------------------------------------------------------------------

def differences(a: Fingerprint, b: Fingerprint, *, names: tuple[str, str] = ("table", "here")) -> list[str]:
    """What differs between ``a`` and ``b``, one line per aspect, e.g.
    ``CPU: table 'AMD EPYC 7B13' (8 cores), here 'AMD EPYC 9B14' (2 cores)``. Empty when they match."""
    first, second = names
    lines = []
    if (a.cpu, a.arch, a.physical_cores, a.logical_cores, a.usable_cores) != \
            (b.cpu, b.arch, b.physical_cores, b.logical_cores, b.usable_cores):
        where = (lambda f: f" {f.arch}") if a.arch != b.arch else (lambda f: "")
        lines.append(f"CPU: {first} {a.cpu!r}{where(a)} ({a.cores()}), {second} {b.cpu!r}{where(b)} "
                     f"({b.cores()})")
    if a.isa != b.isa:
        only_a, only_b = sorted(set(a.isa) - set(b.isa)), sorted(set(b.isa) - set(a.isa))
        parts = ([f"only {first} has {' '.join(only_a)}"] if only_a else []) + \
                ([f"only {second} has {' '.join(only_b)}"] if only_b else [])
        lines.append(f"ISA: {'; '.join(parts)}")
    if a.memory_gib != b.memory_gib:
        lines.append(f"memory: {first} {_gib(a.memory_gib)}, {second} {_gib(b.memory_gib)}")
    if (a.os, a.kernel) != (b.os, b.kernel):
        lines.append(f"OS: {first} {a.os} {a.kernel}, {second} {b.os} {b.kernel}")
    if (a.runtime, a.runtime_version) != (b.runtime, b.runtime_version):
        lines.append(f"runtime: {first} {a.runtime} {a.runtime_version}, {second} {b.runtime} "
                     f"{b.runtime_version}")
    if a.provider != b.provider:
        lines.append(f"provider: {first} {a.provider}, {second} {b.provider}")
    cpu_devices = a.device == a.cpu and b.device == b.cpu  # already said by the CPU line
    if a.device != b.device and not cpu_devices:
        lines.append(f"device: {first} {a.device!r}, {second} {b.device!r}")
    if a.threads != b.threads:
        lines.append(f"threads: {first} {_threads(a.threads)}, {second} {_threads(b.threads)}")
    if a.settings != b.settings:
        lines.append(f"run settings: {first} {a.settings or 'runtime defaults'}, {second} "
                     f"{b.settings or 'runtime defaults'}")
    return lines


def _gib(value: int | None) -> str:
    return "unknown" if value is None else f"{value} GiB"


def _threads(value: int | None) -> str:
    return "runtime default" if value is None else str(value)
