"""LatencyTable: file round trip, atomic writes, queries (predict, block_latency), refusals."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from deploykit.errors import TableError
from deploykit.latency.table import COLUMNS, LatencyTable, TableMeta, meta_path, read_meta


def make_meta(**changes) -> TableMeta:
    values = dict(model="convnext_atto", target="cpu-ort", device="the local CPU (any)",
                  device_string="Test CPU 3000", runtime="onnxruntime", runtime_version="1.32.0",
                  provider="CPUExecutionProvider", precision="fp32", batch=1, input_size=(32, 32),
                  threads=None, protocol={"min_iters": 3, "max_ci": 0.02}, mode="measured",
                  date="2026-01-01T00:00:00+00:00", deploykit_version="0.1.0")
    values.update(changes)
    return TableMeta(**values)


def make_row(key: str, kind: str, form: str, median_ms: float, *, indices: str = "",
             source: str = "measured", count: int = 1) -> dict:
    name = "convnext_atto" if kind == "model" else key.split("/")[0]  # the model row names the model
    return {"key": key, "kind": kind, "form": form, "name": name, "family": "convnext",
            "block_type": "ConvNeXtBlock", "indices": indices, "count": count, "in_shape": "8x4x4",
            "out_shape": "8x4x4", "macs": 1234, "median_ms": median_ms, "p90_ms": median_ms * 1.1,
            "mean_ms": median_ms * 1.01, "std_ms": 0.001, "cv": 0.02, "n": 20, "repeats": 1,
            "compile_s": 0.05 if source == "measured" else float("nan"),
            "first_run_ms": 0.3 if source == "measured" else float("nan"),
            "source": source, "measured_at": "2026-01-01T00:00:01+00:00"}


def make_table(**meta_changes) -> LatencyTable:
    """Stem 0.5 + blocks {0,1} (1.0 / merged 0.4) + block 2 (2.0 / 0.5) + head 0.25 ×2 + model 5.5."""
    mode = meta_changes.get("mode", "measured")
    table = LatencyTable(meta=make_meta(**meta_changes))
    for row in (make_row("fixed/stem/aa", "fixed", "fixed", 0.5, source=mode),
                make_row("convnext/a", "block", "original", 1.0, indices="0;1", count=2, source=mode),
                make_row("convnext/a", "block", "merged", 0.4, indices="0;1", count=2, source=mode),
                make_row("convnext/b", "block", "original", 2.0, indices="2", source=mode),
                make_row("convnext/b", "block", "merged", 0.5, indices="2", source=mode),
                make_row("fixed/head/bb", "fixed", "fixed", 0.25, count=2, source=mode),
                make_row("model", "model", "model", 5.5, source=mode)):
        table.add(row)
    return table


def test_round_trip_is_equal_and_leaves_no_temporary_files(tmp_path):
    table = make_table(calibration=(1.1, 0.2), notes=("resumed once",))
    path = table.write(tmp_path / "t.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv", "t.meta.json"]
    back = LatencyTable.read(path)
    assert back.equals(table)
    pd.testing.assert_frame_equal(back.rows, table.rows)
    assert back.meta == table.meta
    assert LatencyTable.read(meta_path(path)).equals(table)  # either file names the table
    plain = pd.read_csv(path)  # readable by plain pandas, columns in the documented order
    assert list(plain.columns) == list(COLUMNS)
    assert json.loads(meta_path(path).read_text())["input_size"] == [32, 32]


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    table = make_table()
    path = table.write(tmp_path / "t.csv")
    before = path.read_text()
    table.add(make_row("fixed/extra/cc", "fixed", "fixed", 0.1))

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        table.write(path)
    monkeypatch.undo()
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv", "t.meta.json"]


def test_predict_sums_fixed_parts_and_the_chosen_form_of_every_block():
    table = make_table(complete=True)
    assert table.block_indices == (0, 1, 2)
    assert table.prunable_indices == (0, 1, 2)
    assert table.fixed_latency() == pytest.approx(0.5 + 2 * 0.25)
    assert table.predict([]) == pytest.approx(1.0 + (1.0 + 1.0 + 2.0))
    assert table.predict([1, 2]) == pytest.approx(1.0 + 1.0 + 0.4 + 0.5)
    assert table.block_latency(1, "merged") == pytest.approx(0.4)
    assert table.model_latency() == pytest.approx(5.5)
    calibrated = table.with_meta(calibration=(2.0, 0.5))
    assert calibrated.predict([1, 2]) == pytest.approx(2.0 * 2.9 + 0.5)


def test_queries_refuse_unknown_blocks_and_forms():
    table = make_table(complete=True)
    with pytest.raises(TableError, match="no merged latency for block 7"):
        table.block_latency(7, "merged")
    with pytest.raises(TableError, match="original or merged"):
        table.block_latency(0, "pruned")
    with pytest.raises(TableError, match=r"block.*9.*not in the table"):
        table.predict([0, 9])
    with pytest.raises(TableError, match="integers"):
        table.predict(["0"])


def test_check_matches_names_every_difference():
    table = make_table()
    assert table.check_matches(target="cpu-ort", batch=1, input_size=32) == []
    with pytest.raises(TableError) as error:
        table.check_matches(target="cpu-openvino", batch=8, input_size=(224, 224))
    message = str(error.value)
    for part in ("target 'cpu-ort' (asked 'cpu-openvino')", "batch 1 (asked 8)",
                 "input size 32x32 (asked 224x224)", "--allow-mismatch"):
        assert part in message
    assert "\n" not in message
    differences = table.check_matches(batch=8, allow_mismatch=True)
    assert differences == ["batch 1 (asked 8)"]


def test_rescale_is_the_last_step_of_predict_and_is_never_written(tmp_path):
    table = make_table(calibration=(2.0, 1.0), complete=True)
    plain = table.predict([0, 2])
    assert plain == pytest.approx(2.0 * (0.5 + 0.4 + 1.0 + 0.5 + 2 * 0.25) + 1.0)  # calibrated sum
    scaled = table.with_rescale((0.5, 0.25))
    assert scaled.predict([0, 2]) == pytest.approx(0.5 * plain + 0.25)
    assert table.rescale is None and table.predict([0, 2]) == plain  # the original is untouched
    assert scaled.with_meta(notes=("x",)).rescale == (0.5, 0.25)  # kept through metadata changes
    back = LatencyTable.read(scaled.write(tmp_path / "t.csv"))
    assert back.rescale is None and back.predict([0, 2]) == pytest.approx(plain)


def test_identity_metadata_round_trips_and_older_tables_still_read(tmp_path):
    table = make_table(fingerprint={"cpu": "X", "id": "abc"}, anchors={"unpruned_ms": 5.5, "merged_ms": 3.0},
                       rescalings={"def": {"a": 1.5, "b": 0.0}}, conditions={"affinity": [0]},
                       complete=True)
    path = table.write(tmp_path / "t.csv")
    assert LatencyTable.read(path).meta == table.meta
    # a table written before the interval columns and the identity fields
    rows = pd.read_csv(path).drop(columns=["ci_low_ms", "ci_high_ms", "ci_half_width"])
    rows.to_csv(path, index=False)
    data = json.loads(meta_path(path).read_text())
    for name in ("fingerprint", "anchors", "rescalings", "conditions"):
        del data[name]
    meta_path(path).write_text(json.dumps(data))
    old = LatencyTable.read(path)
    assert old.meta.fingerprint is None and old.meta.rescalings == {} and old.meta.anchors is None
    assert old.rows["ci_low_ms"].isna().all() and old.predict([0]) == table.predict([0])
    assert list(old.rows.columns) == list(COLUMNS)


def test_measured_and_estimated_rows_never_mix(tmp_path):
    table = make_table()
    with pytest.raises(TableError, match="never mix"):
        table.add(make_row("fixed/other/dd", "fixed", "fixed", 0.1, source="estimated"))
    estimated = make_table(mode="estimated")
    assert set(estimated.rows["source"]) == {"estimated"}
    path = estimated.write(tmp_path / "e.csv")
    text = path.read_text().replace("estimated", "measured", 1)  # hand-edited: one row claims measured
    rows = text.splitlines()
    rows[1] = rows[1].replace(",estimated,", ",measured,")
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(TableError, match="never mix"):
        LatencyTable.read(path)


@pytest.mark.parametrize("damage, message", [
    (lambda csv, meta: meta.unlink(), "metadata not found"),
    (lambda csv, meta: csv.unlink(), "table file not found"),
    (lambda csv, meta: meta.write_text("{not json"), "not valid JSON"),
    (lambda csv, meta: meta.write_text(json.dumps({**json.loads(meta.read_text()), "colour": 1})),
     "unknown table metadata field"),
    (lambda csv, meta: meta.write_text(json.dumps({**json.loads(meta.read_text()), "mode": "guessed"})),
     "mode must be one of"),
    (lambda csv, meta: csv.write_text(csv.read_text().replace("median_ms", "median")), "lacks column"),
    (lambda csv, meta: csv.write_text(csv.read_text() + csv.read_text().splitlines()[1] + "\n"),
     "appears more than once"),
    (lambda csv, meta: csv.write_text(csv.read_text().replace(",block,original,", ",block,pruned,", 1)),
     "has form 'pruned'"),
])
def test_malformed_files_are_table_errors(tmp_path, damage, message):
    path = make_table().write(tmp_path / "t.csv")
    damage(path, meta_path(path))
    with pytest.raises(TableError, match=message):
        LatencyTable.read(path)


def test_rows_need_every_column_and_unique_blocks():
    table = make_table()
    with pytest.raises(TableError, match="lacks column"):
        table.add({"key": "x"})
    with pytest.raises(TableError, match="appear in two original rows"):
        table.add(make_row("convnext/c", "block", "original", 1.0, indices="2;3"))


def test_read_meta_alone(tmp_path):
    table = make_table()
    path = table.write(tmp_path / "t.csv")
    assert read_meta(path) == table.meta
