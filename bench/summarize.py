"""The Markdown tables of BENCHMARKS.md, generated from the raw CSVs in bench/results/ (no figure is typed
by hand).

    .venv/bin/python bench/summarize.py            # every section to stdout
    .venv/bin/python bench/summarize.py speedup    # one section: speedup, bapp, fidelity, stored, accuracy,
                                                   # recovery, costs, compliance, anchored, pairing
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd

RESULTS = Path(__file__).resolve().parent / "results"


def markdown(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join("" if pd.isna(v) else str(v) for v in row) + " |"
            for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def speedup() -> str:
    frame = pd.read_csv(RESULTS / "speedup_depth.csv")
    frame = frame.sort_values(["model", "batch", "k", "target"])
    out = []
    for (model, batch), rows in frame.groupby(["model", "batch"], sort=False):
        wide = []
        for k, at_k in rows.groupby("k"):
            cells = {"k": k, "MACs M": f"{at_k['macs_merged'].iloc[0] / 1e6:,.0f}",
                     "MAC ratio": f"{at_k['mac_ratio'].iloc[0]:.2f}×",
                     "by search": "yes" if bool(at_k["picked_by_search"].iloc[0]) else "no"}
            for _, row in at_k.iterrows():
                t = row["target"]
                predicted = row["predicted_speedup"]
                cells[f"{t} table"] = "" if pd.isna(predicted) else f"{predicted:.2f}×"
                cells[f"{t} measured"] = (f"{row['speedup']:.2f}× ({row['speedup_min']:.2f}–"
                                          f"{row['speedup_max']:.2f}); {row['model_ms']:.1f} ms")
            wide.append(cells)
        out.append(f"**{model}, batch {batch}** (224×224; measured: median of per-round ratios "
                   f"(range); the merged model's median ms)\n\n{markdown(pd.DataFrame(wide))}")
    return "\n\n".join(out)


def bapp() -> str:
    frame = pd.read_csv(RESULTS / "speedup_depth_benchmark_app.csv")
    rows = [{"model": r["model"], "target": r["target"], "batch": r["batch"], "k": r["k"],
             "benchmark_app ms (merged / original)": f"{r['model_ms']:.2f} / {r['reference_ms']:.2f}",
             "benchmark_app speed-up": f"{r['speedup']:.2f}× ({r['speedup_min']:.2f}–{r['speedup_max']:.2f})",
             "deploykit speed-up": f"{r['deploykit_speedup']:.2f}×",
             "ratio": f"{r['speedup_ratio']:.2f}"} for _, r in frame.iterrows()]
    return markdown(pd.DataFrame(rows))


def fidelity() -> str:
    frame = pd.read_csv(RESULTS / "fidelity_summary.csv")
    rows = []
    for (target, model), group in frame.groupby(["target", "model"], sort=True):
        by = group.set_index("variant")
        plain, cal, loo = (by.loc[v] for v in ("table sum", "calibrated (in-sample)", "leave-one-out"))
        rows.append({"target": target, "model": model, "n": int(plain["samples"]),
                     "ρ": f"{plain['spearman']:.3f}", "τ": f"{plain['kendall']:.3f}",
                     "±5%": f"{plain['within_5']:.0%}", "±10%": f"{plain['within_10']:.0%}",
                     "MAPE": f"{plain['mape_pct']:.1f}%",
                     "calibrated ±10% / MAPE": f"{cal['within_10']:.0%} / {cal['mape_pct']:.1f}%",
                     "leave-one-out ±10% / MAPE": f"{loo['within_10']:.0%} / {loo['mape_pct']:.1f}%",
                     "a, b ms": f"{plain['calibration_a']:.2f}, {plain['calibration_b_ms']:+.2f}",
                     "load": str(plain["load_before"]).split()[0], "date": str(plain["date"])[:16]})
    return markdown(pd.DataFrame(rows))


def stored() -> str:
    """The held-out fidelity each re-profiled table stores, beside the machine's own repeatability."""
    frame = pd.read_csv(RESULTS / "profile_tables.csv").sort_values(["target", "model", "input_size"])
    shown = pd.DataFrame({
        "target": frame["target"], "model": frame["model"], "size": frame["input_size"],
        "settings": frame.get("settings", pd.Series(index=frame.index, dtype=object)).fillna(
            "runtime defaults"),
        "predictor": frame["predictor"],
        "end to end": frame.get("paired", pd.Series(False, index=frame.index)).map(
            lambda paired: "paired" if paired is True or paired == "True" else "alone"),
        "n": frame["holdout_n"], "ρ": frame["spearman"].round(3),
        "±5%": (frame["within_5"] * 100).round(0).astype(int).astype(str) + "%",
        "±10%": (frame["within_10"] * 100).round(0).astype(int).astype(str) + "%",
        "MAPE": frame["mape_pct"].round(1).astype(str) + "%",
        "max": frame["max_error_pct"].round(1).astype(str) + "%",
        "unpruned itself ±5%": (frame["repeat_within_5"] * 100).round(0).astype("Int64").astype(str) + "% of "
        + frame["repeat_n"].astype("Int64").astype(str),
        "robust cv": (frame["repeat_robust_cv"] * 100).round(1).astype(str) + "%",
        "profile s": frame["wall_s"].round(0).astype(int), "load": frame["load_before"].str.split().str[0],
        "date": frame["date"].str[:16]})
    return markdown(shown)


def compliance(name: str = "budget_compliance.csv") -> str:
    """Budget compliance per table: the share within 1.03 × budget, absolute and relative to the original
    measured alongside, next to when the table was profiled (a table older than the machine's state
    misses in milliseconds while its ratios hold); with ``--anchor`` rows, the map each table got."""
    frame = pd.read_csv(RESULTS / name)
    rows = []
    for table, group in frame.groupby("table", sort=True):
        relative = group["within_relative"].dropna().astype(bool)
        drift = (group["original_measured_ms"] / group["original_predicted_ms"]).median()
        within = group["within_budget"].astype(bool)
        row = {"table": table.removeprefix("latency_tables/").removesuffix("_b1.csv"),
               "profiled": str(group["table_date"].iloc[0])[:16]}
        anchored = group["anchored"].dropna() if "anchored" in group.columns else pd.Series(dtype=str)
        if len(anchored):
            row["re-anchored: here ="] = str(anchored.iloc[0])
        rows.append({**row, "within 1.03 × budget": f"{within.mean():.0%} of {len(within)}",
                     "relative": f"{relative.mean():.0%} of {len(relative)}" if len(relative) else "",
                     "original measured / predicted": f"{drift:.2f}",
                     "unused, median": f"{group['unused_pct'].median():+.1f}%",
                     "measured": str(group["date"].max())[:16]})
    return markdown(pd.DataFrame(rows))


def anchored_compliance() -> str:
    """As :func:`compliance`, for each ``bench/budget_compliance.py --anchor`` run on record, with its
    command."""
    parts = []
    for path in sorted(RESULTS.glob("budget_compliance_*anchor*.csv")):
        command = pd.read_csv(path, usecols=["command"])["command"].iloc[0]
        parts.append(f"`{command}`\n\n{compliance(path.name)}")
    if not parts:
        raise FileNotFoundError(2, "no --anchor run", str(RESULTS / "budget_compliance_*anchor*.csv"))
    return "\n\n".join(parts)


def accuracy() -> str:
    frame = pd.read_csv(RESULTS / "accuracy_latency_summary.csv")
    rows = []
    for _, r in frame.iterrows():
        pruned = "" if pd.isna(r["pruned"]) else " / ".join(p.strip() for p in str(r["pruned"]).split("|"))
        ratio = "" if pd.isna(r["channel_ratio_mean"]) else f"ratio {r['channel_ratio_mean']:.2f}"
        rows.append({"model": r["model"], "data": r["data"], "method": r["method"], "n": r["n"],
                     "epochs": r["epochs"], "top-1 %": r["top1"],
                     "measured ms": f"{r['measured_ms_mean']:.3f} ± {r['measured_ms_std']:.3f}",
                     "speed-up": f"{r['speedup_mean']:.2f} ± {r['speedup_std']:.2f}×",
                     "latency / progressive": "" if pd.isna(r["latency_vs_progressive_mean"])
                     else f"{r['latency_vs_progressive_mean']:.2f}",
                     "params M": f"{r['params_mean'] / 1e6:.2f}",
                     "pruned blocks per seed / channels": pruned or ratio})
    return markdown(pd.DataFrame(rows))


def _pm(mean: float, std: float, digits: int = 2) -> str:
    return f"{mean:.{digits}f}" if pd.isna(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def recovery(steps: tuple[int, ...] = (25, 50, 100)) -> str:
    """bench/recovery.py: per case × pruned set × method, the area under the recovery curve (mean top-1
    over the fine-tuning) and top-1 right after pruning, at a few steps and at the end, mean ± std."""
    figures = pd.read_csv(RESULTS / "recovery_auc.csv")
    curve = pd.read_csv(RESULTS / "recovery_summary.csv").set_index(["case", "set", "method", "step"])
    rows = []
    for _, r in figures.iterrows():
        row = {"case": r["case"], "data": f"{r['data']} {r['input_size']}px", "set": f"{r['set']} "
               f"({r['n_pruned']} blocks)", "method": r["method"], "n": r["n"],
               "original": _pm(r["original_top1_mean"], r["original_top1_std"]),
               "AUC / steps": f"**{_pm(r['auc_mean'], r['auc_std'])}**",
               "AUC, training λ": _pm(r["auc_training_mean"], r["auc_training_std"]),
               "step 0": _pm(r["top1_step0_mean"], r["top1_step0_std"], 1)}
        for step in steps:
            key = (r["case"], r["set"], r["method"], step)
            row[f"step {step}"] = (_pm(curve.loc[key, "top1_mean"], curve.loc[key, "top1_std"], 1)
                                   if key in curve.index else "")
        row[f"end ({r['end_step']})"] = _pm(r["top1_end_mean"], r["top1_end_std"])
        rows.append(row)
    frame = pd.DataFrame(rows)
    ends = [c for c in frame.columns if c.startswith("end (")]  # one end column per step count
    frame["end"] = frame[ends].bfill(axis=1).iloc[:, 0]
    frame = frame.drop(columns=ends)
    blocks = "; ".join(f"{case} {s}: {p}" for (case, s), p in
                       figures.groupby(["case", "set"], sort=False)["pruned"].first().items())
    ends = figures.groupby("case", sort=False)["end_step"].first()
    return (markdown(frame) + f"\n\nPruned blocks — {blocks}. End steps: "
            + ", ".join(f"{case} {int(end)}" for case, end in ends.items()) + ".")


def costs() -> str:
    parts = []
    path = RESULTS / "profile_tables.csv"
    if path.exists():
        frame = pd.read_csv(path).sort_values(["model", "target", "input_size"])
        keep = frame[["model", "target", "input_size", "wall_s", "sentinel_drifts", "load_before", "date"]]
        parts.append("Profiling a table (`deploykit profile --force`, batch 1, end-to-end fit and held-out "
                     "check included; `bench/profile_tables.py`, `profile_tables.csv`):\n\n" + markdown(keep))
    path = RESULTS / "run_costs.csv"
    if path.exists():
        rows = []
        for _, r in pd.read_csv(path).iterrows():
            stage = {k[2:]: v for k, v in r.items() if k.startswith("s_") and not pd.isna(v)}
            rows.append({"date": str(r["date"])[:16], "mode": r["mode"], "wall s": r["wall_s"],
                         "baseline": stage.get("baseline"), "profile": stage.get("profile"),
                         "supernet": stage.get("supernet"), "search": _total(stage, "search"),
                         "train": _total(stage, "train"), "continued": stage.get("continue original"),
                         "export + verify": round(_total(stage, "export") + _total(stage, "verify"), 1),
                         "load start/end": f"{r['load_start']}/{r['load_end']}"})
        parts.append("`deploykit run` from nothing (`bench/costs.py --run`; seconds; `run_costs.csv`):\n\n"
                     + markdown(pd.DataFrame(rows)))
    path = RESULTS / "search_speed.csv"
    if path.exists():
        frame = pd.read_csv(path)
        keep = frame[["model", "space", "proxy", "budget", "k", "search_median_s", "cli_wall_s"]] \
            if "k" in frame.columns else frame[["model", "space", "proxy", "budget", "search_median_s",
                                                "cli_wall_s"]]
        parts.append("Search (`bench/search_speed.py`; `search_speed.csv`):\n\n" + markdown(keep))
    return "\n\n".join(parts)


def pairing() -> str:
    """bench/table_pairing.py: per mode, how far apart the same architecture measured in the table."""
    frame = pd.read_csv(RESULTS / "table_pairing.csv")
    rows = []
    for mode, group in frame.groupby("mode", sort=False):
        gaps, base = group["continued_gap"], group["baseline_ms"]
        rows.append({"mode": mode, "measurements": len(group),
                     "baseline vs continued: median gap": f"{gaps.median():.1%}",
                     "largest gap": f"{gaps.max():.1%}", "within ±5 %": f"{(gaps <= 0.05).mean():.0%}",
                     "faster by speed-up, not in ms": int(group["faster_not_smaller"].sum()),
                     "baseline ms (range)": f"{base.min():.3f}–{base.max():.3f}",
                     "wall s (median)": f"{group['wall_s'].median():.1f}"})
    when = f"{str(frame['measured_at'].min())[:16]} – {str(frame['measured_at'].max())[11:16]}"
    return f"Measured {when}, {frame['settings'].iloc[0]}:\n\n" + markdown(pd.DataFrame(rows))


def _total(stage: dict[str, float], prefix: str) -> float:
    return round(sum(v for k, v in stage.items() if k.startswith(prefix)), 1)


SECTIONS: dict[str, Callable[[], str]] = {"speedup": speedup, "bapp": bapp, "fidelity": fidelity,
                                          "stored": stored, "accuracy": accuracy, "recovery": recovery,
                                          "costs": costs, "compliance": compliance,
                                          "anchored": anchored_compliance, "pairing": pairing}


def main(argv: list[str]) -> int:
    for name in argv or list(SECTIONS):
        try:
            print(f"<!-- {name} -->\n{SECTIONS[name]()}\n")
        except FileNotFoundError as error:
            print(f"<!-- {name}: {error.filename} missing -->\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
