"""What else runs on the machine: load averages and a snapshot of every process's CPU time, from ``/proc``.

The contention guard (:mod:`deploykit.measure.contention`) reads them before and over each measurement,
the sentinel (:mod:`deploykit.latency.sentinel`) when the whole model drifts, and a device agent reports
its load with every measurement. Standard library only: a board's agent reads them too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

Snapshot = dict[int, tuple[str, int, int]]          # pid → (name, parent pid, CPU ticks)
TOP_PROCESSES = 5


def load_average() -> list[float] | None:
    """The 1-, 5- and 15-minute load averages, or None where the OS has none."""
    if not hasattr(os, "getloadavg"):
        return None
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def process_snapshot(proc: Path = Path("/proc")) -> Snapshot:
    """Every process's name, parent and CPU time (user + system, clock ticks), from ``/proc/PID/stat``."""
    found: Snapshot = {}
    try:
        entries = list(proc.iterdir())
    except OSError:
        return found
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        parsed = parse_stat(text)
        if parsed is not None:
            found[int(entry.name)] = parsed
    return found


def parse_stat(text: str) -> tuple[str, int, int] | None:
    """``(name, ppid, utime + stime)`` from one ``/proc/PID/stat`` line (the name may hold spaces)."""
    left, right = text.find("("), text.rfind(")")
    if left < 0 or right < left:
        return None
    fields = text[right + 2:].split()
    try:
        return text[left + 1:right], int(fields[1]), int(fields[11]) + int(fields[12])
    except (IndexError, ValueError):
        return None


def busiest(before: tuple[float, Snapshot], after: tuple[float, Snapshot], *, exclude_root: int | None = None,
            top: int = TOP_PROCESSES) -> list[dict[str, Any]]:
    """The processes that used the most CPU between two snapshots, this process tree excluded (its
    measuring workers are the load being measured, not competition): pid, name, share of one CPU."""
    (t0, first), (t1, second) = before, after
    wall = max(t1 - t0, 1e-9)
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    mine = own_tree(second, os.getpid() if exclude_root is None else exclude_root)
    used = []
    for pid, (name, _, cpu) in second.items():
        if pid in mine or pid not in first or first[pid][0] != name:
            continue
        share = (cpu - first[pid][2]) / ticks / wall
        if share > 0:
            used.append({"pid": pid, "name": name, "cpu_share": round(share, 3)})
    used.sort(key=lambda p: (-p["cpu_share"], p["pid"]))
    return used[:top]


def own_tree(snapshot: Snapshot, root: int) -> set[int]:
    """``root`` and every process below it."""
    children: dict[int, list[int]] = {}
    for pid, (_, parent, _) in snapshot.items():
        children.setdefault(parent, []).append(pid)
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in tree:
            tree.add(pid)
            todo += children.get(pid, [])
    return tree

