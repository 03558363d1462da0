"""How reproducible one model's latency is under each run setting, across fresh processes.

For each model and each setting (threads 1 / all physical cores; onnxruntime spinning on / off;
OpenVINO threads), the model is timed in ``--processes`` fresh worker processes — the measurement a
profile takes — candidates interleaved round by round. Per setting: the median of the process medians,
the robust cv (1.4826 · MAD / median), the share of processes within ±5 % of their median, the range.
``--busy N`` starts N busy-looping processes for the whole run (the "one busy neighbour" case), and
``--smt-check`` times one thread pinned to CPU 0 while CPU 1 idles, computes, or spins (``pause``),
which shows whether the VM's two vCPUs share one physical core of the host. ``--pin`` adds one thread
with the worker process pinned to each usable CPU (does CPU affinity steady a fresh process?), and
``--no-aslr`` one thread with the worker started without address-space layout randomization (Linux
``personality(ADDR_NO_RANDOMIZE)``, inherited by the worker): do the buffers' addresses, different in
every process, make a small model faster in some processes than in others?
``--timeline`` keeps one row
per process (when, which setting, its median) with what ``/proc/stat`` says the vCPUs did meanwhile
(user, system, idle and steal shares): is a slow process one whose vCPUs were stolen or idle?

    .venv/bin/python bench/settings_repeatability.py --processes 8
    .venv/bin/python bench/settings_repeatability.py --processes 6 --busy 1 \
        --out bench/results/settings_busy.csv
    .venv/bin/python bench/settings_repeatability.py --smt-check
    .venv/bin/python bench/settings_repeatability.py --pin --models convnext_atto_32 --targets cpu-ort \
        --processes 16 --out bench/results/settings_pinned.csv
    .venv/bin/python bench/settings_repeatability.py --no-aslr --models convnext_atto_32 --targets cpu-ort \
        --processes 16 --out bench/results/settings_no_aslr.csv
    .venv/bin/python bench/settings_repeatability.py --timeline --models convnext_atto_32 --targets cpu-ort \
        --processes 30 --out bench/results/settings_timeline.csv
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import load_average, package_version

from deploykit.clock import utc_now
from deploykit.measure.contention import GuardPolicy
from deploykit.measure.host import LocalHost
from deploykit.protocol import Protocol
from deploykit.runsettings import RunSettings
from deploykit.runtimes import hostinfo
from deploykit.targets import load_target

RESULTS = Path(__file__).resolve().parent / "results"
SETTINGS = {
    "cpu-ort": [RunSettings(threads=1), RunSettings(threads=2, spinning=True),
                RunSettings(threads=2, spinning=False)],
    "cpu-openvino": [RunSettings(threads=1), RunSettings(threads=2), RunSettings(threads=1, pinning=False),
                     RunSettings(threads=2, pinning=False)],
}
MODELS = {"convnext_atto_224": ("convnext_atto", 224), "mobilenetv2_100_224": ("mobilenetv2_100", 224),
          "convnext_atto_32": ("convnext_atto", 32)}


def export(name: str, size: int, folder: Path) -> Path:
    from deploykit.export import export_onnx
    from deploykit.models import create_model

    model = create_model(name, input_size=(size, size), num_classes=10)
    return export_onnx(model.eval(), (1, 3, size, size), folder / f"{name}_{size}.onnx")


def robust(values: list[float]) -> dict[str, float]:
    middle = statistics.median(values)
    mad = statistics.median(abs(v - middle) for v in values)
    return {"median_ms": middle, "robust_cv": 1.4826 * mad / middle,
            "within_5pct": sum(abs(v / middle - 1) <= 0.05 for v in values) / len(values),
            "min_ms": min(values), "max_ms": max(values)}


def busy_loop() -> None:
    while True:
        pass


def run(args) -> list[dict]:
    host = LocalHost(GuardPolicy(wait_quiet_s=0.0))
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        files = {key: export(*MODELS[key], Path(folder)) for key in args.models}
        neighbours = [multiprocessing.Process(target=busy_loop, daemon=True) for _ in range(args.busy)]
        for p in neighbours:
            p.start()
        try:
            for key, path in files.items():
                size = MODELS[key][1]
                for target_name in args.targets:
                    target = load_target(target_name)
                    variants = _variants(target_name, pin=args.pin, no_aslr=args.no_aslr)
                    medians: dict[str, list[float]] = {label: [] for label in variants}
                    for _ in range(args.processes):
                        for label, (settings, cpus, fixed_layout) in variants.items():
                            # the worker process inherits this process's affinity and personality
                            with _pinned(cpus), _without_aslr(fixed_layout):
                                m = host.measure(path, target=target.with_settings(settings),
                                                 protocol=Protocol(), input_shape=(1, 3, size, size))
                            medians[label].append(m.median_ms)
                    for label, values in medians.items():
                        row = {"model": key, "target": target_name, "settings": label,
                               "processes": len(values), "busy_neighbours": args.busy,
                               **{k: round(v, 5) for k, v in robust(values).items()},
                               "process_medians_ms": " ".join(f"{v:.4f}" for v in values)}
                        print(row, flush=True)
                        rows.append(row)
        finally:
            for p in neighbours:
                p.terminate()
    return rows


def _variants(target: str, *, pin: bool,
              no_aslr: bool) -> dict[str, tuple[RunSettings, set[int] | None, bool]]:
    """The target's settings; with ``pin`` one thread pinned to each usable CPU in turn; with
    ``no_aslr`` one thread without address-space layout randomization."""
    variants = {settings.describe(): (settings, None, False) for settings in SETTINGS[target]}
    if pin:
        for cpu in sorted(os.sched_getaffinity(0)):
            variants[f"1 thread, worker pinned to CPU {cpu}"] = (RunSettings(threads=1), {cpu}, False)
    if no_aslr:
        variants["1 thread, worker without ASLR"] = (RunSettings(threads=1), None, True)
    return variants


ADDR_NO_RANDOMIZE = 0x0040000  # linux/personality.h


@contextlib.contextmanager
def _without_aslr(wanted: bool):
    """This process's personality with ADDR_NO_RANDOMIZE while the block runs: processes started
    meanwhile get the same address-space layout every time."""
    if not wanted:
        yield
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    before = libc.personality(0xFFFFFFFF)  # query
    if before == -1 or libc.personality(before | ADDR_NO_RANDOMIZE) == -1:
        raise OSError(ctypes.get_errno(), "personality(ADDR_NO_RANDOMIZE) failed")
    try:
        yield
    finally:
        libc.personality(before)


@contextlib.contextmanager
def _pinned(cpus: set[int] | None):
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def cpu_times() -> list[int]:
    """The machine's cumulative CPU time per state (the ``cpu`` line of /proc/stat, in ticks)."""
    with open("/proc/stat") as stat:
        return [int(v) for v in stat.readline().split()[1:1 + len(CPU_FIELDS)]]


def timeline(args) -> list[dict]:
    """One row per fresh process, settings interleaved, with the vCPUs' time shares during it."""
    host = LocalHost(GuardPolicy(wait_quiet_s=0.0))
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for key in args.models:
            name, size = MODELS[key]
            path = export(name, size, Path(folder))
            for target_name in args.targets:
                target = load_target(target_name)
                for index in range(args.processes):
                    for settings in SETTINGS[target_name]:
                        before, started = cpu_times(), time.time()
                        m = host.measure(path, target=target.with_settings(settings), protocol=Protocol(),
                                         input_shape=(1, 3, size, size))
                        spent = [b - a for a, b in zip(before, cpu_times())]
                        total = sum(spent) or 1
                        rows.append({"model": key, "target": target_name, "round": index + 1,
                                     "settings": settings.describe(), "started": round(started, 2),
                                     "median_ms": round(m.median_ms, 5),
                                     **{f"{field}_share": round(spent[i] / total, 4)
                                        for i, field in enumerate(CPU_FIELDS)
                                        if field in ("user", "system", "idle", "steal")}})
                        print(rows[-1], flush=True)
    return rows


def smt_check(rounds: int) -> list[dict]:
    """One thread on CPU 0 (a fixed integer loop), while CPU 1 idles or computes."""
    import subprocess

    code_work = ("import time\nt = time.perf_counter()\nx = 0\nfor i in range(6_000_000): x += i * i\n"
                 "print(time.perf_counter() - t)")
    sibling = {"idle": None, "compute": "while True: pass"}
    rows = []
    for index in range(rounds):
        for name, loop in sibling.items():
            other = None
            if loop:
                other = subprocess.Popen(["taskset", "-c", "1", sys.executable, "-c", loop])
                time.sleep(0.3)
            done = subprocess.run(["taskset", "-c", "0", sys.executable, "-c", code_work],
                                  capture_output=True, text=True, check=True)
            if other:
                other.kill()
                other.wait()
            rows.append({"round": index, "cpu1": name, "seconds": float(done.stdout)})
            print(rows[-1], flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--targets", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--busy", type=int, default=0, help="busy-looping neighbour processes")
    parser.add_argument("--pin", action="store_true",
                        help="also one thread with the worker process pinned to each usable CPU in turn")
    parser.add_argument("--no-aslr", action="store_true",
                        help="also one thread with the worker started without address-space randomization")
    parser.add_argument("--smt-check", action="store_true")
    parser.add_argument("--timeline", action="store_true",
                        help="one row per process with the vCPUs' user/system/idle/steal shares meanwhile")
    parser.add_argument("--out", type=Path, default=RESULTS / "settings_repeatability.csv")
    args = parser.parse_args()
    started = time.perf_counter()
    load_before = load_average()
    rows = smt_check(5) if args.smt_check else timeline(args) if args.timeline else run(args)
    stamp = {"date": utc_now(),
             "machine": hostinfo.cpu_name(), "cores": os.cpu_count(),
             "onnxruntime": package_version("onnxruntime"), "openvino": package_version("openvino"),
             "load_before": load_before, "load_after": load_average(),
             "seconds": round(time.perf_counter() - started, 1), "command": " ".join(sys.argv)}
    out = args.out if not args.smt_check else args.out.with_name("settings_smt_check.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*rows[0], *stamp])
        writer.writeheader()
        writer.writerows({**row, **stamp} for row in rows)
    print(f"wrote {out} ({len(rows)} rows, {stamp['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
