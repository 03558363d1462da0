"""What this machine is: CPU architecture and model name, GPU names. Read-only, no SDK imports.

Used to label measurements (a latency table records the device it was measured on) and to refuse a
target whose hardware is not this machine's.
"""

from __future__ import annotations

import functools
import platform
import shutil
import subprocess
from pathlib import Path

_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "armv8": "aarch64"}

# Arm Ltd (implementer 0x41) CPU part numbers, from the cores' Technical Reference Manuals (MIDR_EL1).
_ARM_PARTS = {
    0xD03: "Cortex-A53", 0xD04: "Cortex-A35", 0xD05: "Cortex-A55", 0xD07: "Cortex-A57",
    0xD08: "Cortex-A72", 0xD09: "Cortex-A73", 0xD0A: "Cortex-A75", 0xD0B: "Cortex-A76",
    0xD0C: "Neoverse-N1", 0xD0D: "Cortex-A77", 0xD40: "Neoverse-V1", 0xD41: "Cortex-A78",
    0xD44: "Cortex-X1", 0xD46: "Cortex-A510", 0xD47: "Cortex-A710", 0xD48: "Cortex-X2",
    0xD49: "Neoverse-N2", 0xD4B: "Cortex-A78C", 0xD4D: "Cortex-A715", 0xD4E: "Cortex-X3",
    0xD4F: "Neoverse-V2", 0xD80: "Cortex-A520", 0xD81: "Cortex-A720", 0xD82: "Cortex-X4",
    0xD84: "Neoverse-V3", 0xD8E: "Neoverse-N3",
}


def normalize_arch(name: str) -> str:
    """``AMD64`` → ``x86_64``, ``arm64`` → ``aarch64``; others lower-cased."""
    name = name.strip().lower()
    return _ARCH_ALIASES.get(name, name)


def machine_arch() -> str:
    """This machine's CPU architecture, normalized (``x86_64``, ``aarch64``, ...)."""
    return normalize_arch(platform.machine())


@functools.cache
def cpu_name() -> str:
    """The CPU's model name: ``/proc/cpuinfo`` (Arm cores decoded from their part number), else platform."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        try:
            name = _name_from_cpuinfo(cpuinfo.read_text(errors="replace"))
        except OSError:
            name = ""
        if name:
            return name
    if platform.system() == "Darwin":
        name = _run(["sysctl", "-n", "machdep.cpu.brand_string"])
        if name:
            return name
    return platform.processor() or platform.machine() or "unknown CPU"


def _name_from_cpuinfo(text: str) -> str:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    for key in ("model name", "Model Name", "Hardware"):
        if fields.get(key):
            return fields[key]
    implementer, part = fields.get("CPU implementer", ""), fields.get("CPU part", "")
    try:
        if int(implementer, 16) == 0x41 and int(part, 16) in _ARM_PARTS:
            return f"Arm {_ARM_PARTS[int(part, 16)]}"
    except ValueError:
        pass
    return f"Arm CPU (implementer {implementer}, part {part})" if part else ""


def nvidia_gpu_name(index: int = 0) -> str | None:
    """Name of NVIDIA GPU ``index`` (torch, else ``nvidia-smi``), or None where there is none."""
    name = _torch_gpu_name(index, hip=False)
    if name:
        return name
    out = _run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i", str(index)])
    return out.splitlines()[0].strip() if out else None


def amd_gpu_name(index: int = 0) -> str | None:
    """Marketing name of AMD GPU ``index`` (``rocminfo``, else a ROCm build of torch), or None."""
    out = _run(["rocminfo"])
    if out:
        names = _gpu_agents_from_rocminfo(out)
        if index < len(names):
            return names[index]
    return _torch_gpu_name(index, hip=True)


def _gpu_agents_from_rocminfo(text: str) -> list[str]:
    """The ``Marketing Name`` of every agent whose ``Device Type`` is GPU, in order."""
    names: list[str] = []
    marketing = None
    for line in text.splitlines():
        key, _, value = line.strip().partition(":")
        if key.strip() == "Marketing Name":
            marketing = value.strip()
        elif key.strip() == "Device Type" and value.strip() == "GPU" and marketing:
            names.append(marketing)
    return names


def amd_gpu_present() -> bool:
    """Whether the ROCm kernel driver is there (``/dev/kfd``), i.e. an AMD GPU can be used."""
    return Path("/dev/kfd").exists()


def _torch_gpu_name(index: int, *, hip: bool) -> str | None:
    try:
        import torch
    except ImportError:
        return None
    if bool(getattr(torch.version, "hip", None)) != hip:
        return None
    try:
        if torch.cuda.is_available() and index < torch.cuda.device_count():
            return torch.cuda.get_device_name(index)
    except RuntimeError:
        return None
    return None


def _run(command: list[str]) -> str:
    if shutil.which(command[0]) is None:
        return ""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


# --- CPU affinity ----------------------------------------------------------------------------------

def pinned_cores(threads: int | None) -> tuple[int, ...] | None:
    """The fixed CPU set a measuring process pins itself to for ``threads`` intra-op threads, or None
    where the OS has no affinity API.

    One logical CPU per physical core first (SMT siblings share a core's execution units, so two
    threads on one core time something else than two cores), lowest numbers first, from the CPUs this
    process may use; SMT siblings only when more threads than cores are asked. ``threads`` None (the
    runtime's default: one thread per physical core) takes one CPU of every physical core.
    """
    import os

    if not hasattr(os, "sched_getaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    first, siblings, seen = [], [], set()
    for cpu in allowed:
        core = _core_of(cpu)
        (siblings if core in seen else first).append(cpu)
        seen.add(core)
    ordered = first + siblings
    count = len(first) if threads is None else min(threads, len(ordered))
    return tuple(sorted(ordered[:count]))


def pin_to_cores(threads: int | None) -> tuple[int, ...] | None:
    """Pin this process (and the threads it starts later) to :func:`pinned_cores`; the set, or None
    where the OS does not allow it."""
    import os

    cores = pinned_cores(threads)
    if not cores:
        return None
    try:
        os.sched_setaffinity(0, cores)
    except OSError:
        return None
    return cores


def _core_of(cpu: int) -> tuple[str, str]:
    """(package, core) of a logical CPU from sysfs; the CPU itself where the topology is not there."""
    topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
    try:
        return ((topology / "physical_package_id").read_text().strip(),
                (topology / "core_id").read_text().strip())
    except OSError:
        return ("cpu", str(cpu))
