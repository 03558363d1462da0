"""A table whose rows do not cover what its metadata and model say is an error naming what is missing —
in `lut predict`, `search` and `verify --table` — never a smaller candidate set or a wrong figure
(and a reversed block range is an error, like everywhere else)."""

from __future__ import annotations

import re

import pytest

from deploykit.cli import main
from deploykit.errors import ConfigError, TableError
from deploykit.latency.predictor import Predictor
from deploykit.latency.table import LatencyTable, TableMeta, layout_of, meta_path
from deploykit.subnet import parse_block_list

GROUPS = [(0, 1), (2,), (3, 4, 5)]


def table_with_layout(*, layout: bool = True, complete: bool = True) -> LatencyTable:
    """Stem, blocks 0-5 in three groups (all prunable), head, whole model; the layout a profile records."""
    recorded = layout_of(blocks=6, prunable=range(6), fixed=["stem", "head"]) if layout else None
    meta = TableMeta(model="convnext_atto", target="cpu-ort", device="the local CPU (any)",
                     device_string="Fake CPU", runtime="onnxruntime", runtime_version="0.0",
                     provider="CPUExecutionProvider", precision="fp32", batch=1, input_size=(32, 32),
                     threads=None, protocol={}, mode="measured", date="2026-01-01T00:00:00+00:00",
                     deploykit_version="0.1.0", complete=complete, layout=recorded)
    table = LatencyTable(meta=meta)
    base = {"family": "convnext", "block_type": "ConvNeXtBlock", "in_shape": "8x4x4", "out_shape": "8x4x4",
            "macs": 1, "p90_ms": 0.0, "mean_ms": 0.0, "std_ms": 0.0, "cv": 0.0, "n": 1, "repeats": 1,
            "compile_s": 0.0, "first_run_ms": 0.0, "source": "measured", "measured_at": "2026-01-01"}
    table.add({**base, "key": "fixed/stem", "kind": "fixed", "form": "fixed", "name": "stem", "indices": "",
               "count": 1, "median_ms": 0.5})
    for number, members in enumerate(GROUPS):
        for form, ms in (("original", 2.0), ("merged", 0.5)):
            table.add({**base, "key": f"convnext/{number}", "kind": "block", "form": form,
                       "name": f"b{number}", "indices": ";".join(map(str, members)), "count": len(members),
                       "median_ms": ms})
    table.add({**base, "key": "fixed/head", "kind": "fixed", "form": "fixed", "name": "head", "indices": "",
               "count": 1, "median_ms": 0.25})
    table.add({**base, "key": "model", "kind": "model", "form": "model", "name": "convnext_atto",
               "indices": "", "count": 1, "median_ms": 12.0})
    return table


def without(table: LatencyTable, key: str, form: str) -> LatencyTable:
    keep = ~((table.rows["key"] == key) & (table.rows["form"] == form))
    return LatencyTable(meta=table.meta, rows=table.rows[keep].reset_index(drop=True))


def cut_in_half(path) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:len(lines) // 2 + 1]))


def commands(path, tmp_path):
    dummy = tmp_path / "model.onnx"
    dummy.write_bytes(b"not reached")
    return {"lut predict": ["lut", "predict", str(path), "--prune", "1"],
            "search": ["search", "--table", str(path), "--budget", "0.8", "--out", str(tmp_path / "s.json")],
            "verify --table": ["verify", str(dummy), "--target", "cpu-ort", "--table", str(path),
                               "--pruned", "1"]}


def foreign_predictor(table: LatencyTable) -> LatencyTable:
    return table.with_meta(predictor=Predictor(10.0, {0: -1.0, 1: -1.0}).as_dict())


# case → (damage; None: the CSV is cut in half), whether the table records its layout, the message
CASES = {
    "missing merged row": (lambda t: without(t, "convnext/1", "merged"), True,
                           "block(s) 2 have no merged-form row"),
    "missing block": (lambda t: without(without(t, "convnext/2", "original"), "convnext/2", "merged"),
                      True, "block(s) 3-5 have no original-form row"),
    "missing fixed part": (lambda t: without(t, "fixed/head", "fixed"), True,
                           "no row for fixed part(s) head"),
    "cut in half": (None, True,
                    "block(s) 3-5 have no original-form row; block(s) 3-5 have no merged-form row"),
    "cut in half, no layout": (None, False, "no whole-model row"),
    "interrupted": (lambda t: t.with_meta(complete=False), True,
                    "is incomplete (its profile was interrupted"),
    "foreign predictor": (foreign_predictor, True,
                          "its predictor prices blocks 0-1 but the prunable blocks are 0-5"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_table_that_does_not_cover_its_model_is_an_error_naming_what_is_missing(tmp_path, capsys, case):
    damage, layout, message = CASES[case]
    table = table_with_layout(layout=layout)
    path = tmp_path / "t.csv"
    (damage(table) if damage else table).write(path)
    if damage is None:
        cut_in_half(path)
    with pytest.raises(TableError, match=re.escape(message)):
        LatencyTable.read(path).predict(())
    for name, args in commands(path, tmp_path).items():
        assert main(args) == 2, name
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err, (name, err)
    assert not (tmp_path / "s.json").exists()


def test_a_whole_table_is_used_as_it_is(tmp_path, capsys):
    table_with_layout().write(tmp_path / "t.csv")
    assert main(["lut", "predict", str(tmp_path / "t.csv"), "--prune", "1,3-4"]) == 0
    out = capsys.readouterr().out
    assert "→ 8.250 ms; unpruned 12.750 ms" in out and "table fidelity: not measured (isolated sum)" in out


def test_a_reversed_range_is_an_error_not_an_empty_set(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"reversed block range '3-1' in '0,3-1' \(write 1-3\)"):
        parse_block_list("0,3-1")
    assert parse_block_list("1-3, 5") == (1, 2, 3, 5) and parse_block_list("2-2") == (2,)
    table_with_layout().write(tmp_path / "t.csv")
    assert main(["lut", "predict", str(tmp_path / "t.csv"), "--prune", "3-1"]) == 2
    err = capsys.readouterr().err
    assert "reversed block range '3-1'" in err and len(err.strip().splitlines()) == 1
    assert not meta_path(tmp_path / "missing.csv").exists()
