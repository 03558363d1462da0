"""Atomic writes: the old file or the new one, never half of one; an output that cannot be written is
one OutputError naming the path and the reason, and leaves nothing behind (no temporary either)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from deploykit.errors import DeployKitError, OutputError, one_line, os_error_reason
from deploykit.fileio import (
    atomic_path,
    check_output_files,
    check_writable_dir,
    ensure_dir,
    scratch_dir,
    write_json_atomic,
    write_text_atomic,
)


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _can_create_in(folder: Path) -> bool:
    try:
        handle, probe = tempfile.mkstemp(dir=folder)
    except OSError:
        return False
    os.close(handle)
    os.unlink(probe)
    return True


@pytest.fixture
def read_only(tmp_path):
    """A folder nobody may write in: chmod 555 stops everyone but root; as root, a kernel file system
    that refuses new files even to root."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    found = next((c for c in (folder, Path("/sys"), Path("/proc")) if c.is_dir() and not _can_create_in(c)),
                 None)
    if found is None:
        folder.chmod(0o755)
        pytest.skip("no folder here refuses new files (root, and /sys and /proc accept them)")
    yield found
    folder.chmod(0o755)


def test_atomic_write_replaces_and_cleans_up(tmp_path):
    path = write_json_atomic(tmp_path / "deep" / "a.json", {"x": 1})
    assert path.read_text() == '{\n  "x": 1\n}\n'
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("the writer failed")
    assert path.read_text() == '{\n  "x": 1\n}\n'  # the old file, whole
    assert listing(tmp_path) == ["deep", "deep/a.json"]


def test_a_path_under_a_regular_file_is_one_output_error(tmp_path):
    (tmp_path / "afile").write_text("keep")
    for target in (tmp_path / "afile" / "x.json", tmp_path / "afile" / "sub" / "x.json"):
        with pytest.raises(OutputError, match=rf"cannot create folder .*: {tmp_path / 'afile'} exists and is "
                                              "not a folder$"):
            write_text_atomic(target, "x")
    assert (tmp_path / "afile").read_text() == "keep" and listing(tmp_path) == ["afile"]


def test_a_path_that_is_a_folder_is_one_output_error(tmp_path):
    (tmp_path / "adir").mkdir()
    with pytest.raises(OutputError, match=r"cannot write .*adir: it is a folder$"):
        write_text_atomic(tmp_path / "adir", "x")
    with pytest.raises(OutputError, match="it is a folder"), scratch_dir(tmp_path / "adir"):
        pass
    assert listing(tmp_path) == ["adir"]


def test_a_read_only_folder_is_one_output_error(read_only):
    before = listing(read_only) if read_only.name == "read-only" else None
    with pytest.raises(OutputError, match=rf"cannot write {read_only}/x.json: .+ in folder {read_only}$"):
        write_text_atomic(read_only / "x.json", "x")
    with pytest.raises(OutputError, match=rf"cannot create folder {read_only}/sub"):
        ensure_dir(read_only / "sub")
    with pytest.raises(OutputError, match=rf"cannot write in folder {read_only}: [^/]+$"):
        check_writable_dir(read_only)
    nested = rf"cannot create folder {read_only}/a/b: .+ in folder {read_only}$"
    with pytest.raises(OutputError, match=nested):
        check_writable_dir(read_only / "a" / "b")
    if before is not None:
        assert listing(read_only) == before


def test_an_error_while_writing_becomes_an_output_error_and_leaves_no_temporary(tmp_path):
    with pytest.raises(OutputError, match=r"cannot write .*b.txt: no space left on device$"), \
            atomic_path(tmp_path / "b.txt"):
        raise OSError(28, "No space left on device")
    assert listing(tmp_path) == []


def test_several_outputs_are_checked_before_any_is_written(tmp_path):
    (tmp_path / "adir").mkdir()
    with pytest.raises(OutputError, match="it is a folder"):
        check_output_files(tmp_path / "t.csv", None, tmp_path / "adir")
    assert check_output_files(tmp_path / "new" / "t.csv", tmp_path / "new" / "t.json") == (
        tmp_path / "new" / "t.csv", tmp_path / "new" / "t.json")
    assert listing(tmp_path) == ["adir"]  # checked, not made: no folder, no file, no probe left


def test_messages_are_one_line():
    assert issubclass(OutputError, DeployKitError) and issubclass(OutputError, OSError)
    assert one_line(IndexError()) == "IndexError"
    assert one_line(ValueError("first\n\n  second  \n")) == "first second"
    assert os_error_reason(PermissionError(13, "Permission denied", "/x")) == "permission denied: /x"
    assert os_error_reason(OSError("odd")) == "odd"


NESTED = "[" * 5000 + "]" * 5000


@pytest.mark.parametrize(("text", "message"), [
    (NESTED, "nested 5000 levels deep"),
    ('{"a": ' * 40 + "1" + "}" * 40, "nested 40 levels deep"),
    ("1" * 5000, "not valid JSON"),
    ("[1, 2]", "must hold a JSON object, not array"),
    ('"x" ', "must hold a JSON object, not string"),
    (b"\xff\xfe", "not UTF-8"),
    ("{", "not valid JSON"),
    ("x" * 20000, "over the limit of 10000"),
])
def test_the_json_reader_bounds_depth_size_and_type_in_one_line(text, message):
    from deploykit.errors import ConfigError
    from deploykit.fileio import parse_json

    with pytest.raises(ConfigError, match=message) as caught:
        parse_json(text, what="the thing", max_bytes=10000)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 400


def test_the_json_reader_counts_brackets_inside_strings_as_text(tmp_path):
    from deploykit.fileio import json_depth, parse_json, read_json

    text = '{"a": "[[[[\\" {{{{", "b": [{"c": []}]}'
    assert json_depth(text) == 4
    assert parse_json(text, what="x", max_depth=4) == {"a": '[[[[" {{{{', "b": [{"c": []}]}
    (tmp_path / "f.json").write_text(text)
    assert read_json(tmp_path / "f.json", what="x")["b"] == [{"c": []}]


def test_the_json_reader_reads_no_more_than_its_limit_from_an_endless_file():
    from deploykit.errors import ConfigError
    from deploykit.fileio import read_json

    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero here")
    with pytest.raises(ConfigError, match="not found"):  # not a regular file: never read
        read_json("/dev/zero", what="x")
