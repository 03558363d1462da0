"""The CLI: help, version, the blocks command in every format, and one-line errors for bad input."""

import json
import subprocess
import sys

import pytest

from deploykit import __version__
from deploykit.cli import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "deploykit.cli", *args], capture_output=True, text=True,
                          timeout=300)


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "blocks" in capsys.readouterr().out


def help_text(capsys, *command) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


@pytest.mark.parametrize("command,parts", [
    (("profile",), ("--max-ci F", "confidence interval of the median", "--max-time S", "--sentinel-every N",
                    "--sentinel-interval S", "--max-drift F", "built beside it and replaces it once complete",
                    "another fingerprint: CPU, cores")),
    (("lut", "anchor"), ("--rounds R", "interleaved", "keyed by this machine's fingerprint",
                         "`deploykit lut check` does")),
    (("lut",), ("anchor",)),
    (("search",), ("a millisecond budget on it is refused until `deploykit lut anchor TABLE`",
                   "re-anchored for, this machine")),
    (("verify",), ("a table measured on another machine is always used, with a note",)),
    (("lut", "check"), ("not re-anchored for this one",)),
])
def test_help_explains_the_measurement_and_identity_options(capsys, command, parts):
    text = help_text(capsys, *command)
    for part in parts:
        assert part in text, part
    assert "--max-cv" not in text


def test_version(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert __version__ in capsys.readouterr().out


def test_blocks_table(capsys):
    assert main(["blocks", "convnext_atto", "--input-size", "64"]) == 0
    out = capsys.readouterr().out
    assert "convnext_atto at 64x64: 12 blocks, 12 prunable" in out
    assert "stages.0.blocks.0" in out and "merging all 12 prunable blocks" in out


def test_blocks_json_and_csv(capsys):
    assert main(["blocks", "convnext_atto", "--input-size", "64x96", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["in_shape"] == [40, 16, 24] and rows[0]["merged_macs"] < rows[0]["macs"]
    assert main(["blocks", "convnext_atto", "--input-size", "64", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("index,name,family") and len(lines) == 13


@pytest.mark.parametrize("args,message", [
    (["blocks", "no_such_model"], "unknown model 'no_such_model'"),
    (["blocks", "convnext_atto", "--input-size", "0"], "expected a size like 224 or 96x128"),
    (["blocks", "convnext_atto", "--format", "xml"], "invalid choice"),
    (["blocks", "convnextv2_atto", "--input-size", "64"], "no prunable block: GlobalResponseNorm"),
])
def test_bad_input_is_one_line_without_traceback(args, message):
    result = run_cli(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_usage_errors_are_one_line_pointing_to_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["blocks", "--input-size", "0"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "usage:" not in err
    assert err.startswith("deploykit blocks: error: argument --input-size: expected a size like 224")
    assert err.rstrip().endswith("(see `deploykit blocks --help`)")


@pytest.mark.parametrize("error,message", [
    (PermissionError(13, "Permission denied", "/data/x.csv"), "permission denied: /data/x.csv"),
    (OSError(28, "No space left on device"), "no space left on device"),
])
def test_an_os_error_the_library_did_not_anticipate_is_still_one_line(monkeypatch, capsys, error, message):
    def fails(args):
        raise error

    monkeypatch.setattr("deploykit.cli.model.run_blocks", fails)
    assert main(["blocks"]) == 2
    assert capsys.readouterr().err == f"deploykit blocks: error: {message}\n"


def test_an_error_without_a_message_is_still_a_line(monkeypatch, capsys):
    from deploykit.errors import ConfigError

    def fails(args):
        raise ConfigError("")

    monkeypatch.setattr("deploykit.cli.model.run_blocks", fails)
    assert main(["blocks"]) == 2
    assert capsys.readouterr().err == "deploykit blocks: error: ConfigError\n"


# --- the command layer reads its defaults from the library ---------------------------------------------

def _parser_of(*path):
    import argparse

    from deploykit.cli import build_parser

    parser = build_parser()
    for name in path:
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
    return parser


def _defaults(*path) -> dict:
    return {a.dest: a.default for a in _parser_of(*path)._actions}


def test_option_defaults_are_the_librarys():
    from deploykit.latency.options import ANCHOR_ROUNDS, CHECK_SAMPLES, CHECK_SEED, EndToEndOptions
    from deploykit.protocol import Protocol
    from deploykit.remote.client import RetryPolicy
    from deploykit.remote.server import ServeConfig
    from deploykit.remote.wire import DEFAULT_PORT
    from deploykit.search.options import DEFAULT_PROXY, SearchOptions
    from deploykit.shapes import DEFAULT_BATCH, DEFAULT_INPUT_SIZE
    from deploykit.training.heldout import ProxyData
    from deploykit.verify.timing import DEFAULT_ROUNDS

    search, options = _defaults("search"), SearchOptions()
    assert (search["strategy"], search["seed"], search["population"], search["generations"]) == \
        (options.strategy, options.seed, options.population, options.generations)
    assert (search["proxy"], search["batch_size"], search["recalibrate_batches"]) == \
        (DEFAULT_PROXY, ProxyData.batch_size, ProxyData.recalibrate_batches)
    serve = _defaults("serve")
    assert serve["port"] == ServeConfig.port == DEFAULT_PORT
    fields = {"host": "host", "max_upload_mb": "max_upload_mb", "timeout": "timeout_s",
              "max_queue": "max_queue", "header_timeout": "header_timeout_s",
              "body_timeout": "body_timeout_s", "max_input_elements": "max_input_elements",
              "max_reply_mb": "max_reply_mb"}
    assert {option: serve[option] for option in fields} == \
        {option: getattr(ServeConfig, field) for option, field in fields.items()}
    assert _defaults("device")["retries"] == RetryPolicy.attempts
    check = _defaults("lut", "check")
    assert (check["samples"], check["seed"]) == (CHECK_SAMPLES, CHECK_SEED)
    assert _defaults("lut", "anchor")["rounds"] == ANCHOR_ROUNDS
    assert _defaults("verify")["rounds"] == _defaults("table")["rounds"] == DEFAULT_ROUNDS
    assert _defaults("export")["batch"] == DEFAULT_BATCH
    assert _defaults("blocks")["input_size"] == DEFAULT_INPUT_SIZE
    profile = _defaults("profile")
    assert {name: profile[name] for name in ("predictor", "fit_samples", "holdout", "paired")} == \
        {name: getattr(EndToEndOptions, name) for name in ("predictor", "fit_samples", "holdout", "paired")}
    protocol, names = Protocol(), ("warmup_s", "min_iters", "max_ci", "max_time_s", "threads", "spinning")
    assert {name: profile[name] for name in names} == {name: getattr(protocol, name) for name in names}


def test_building_the_parser_loads_neither_torch_nor_pandas():
    """`deploykit --help`, and the device agent on a board without the training stack, build every parser."""
    code = ("import sys; from deploykit.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'pandas', 'timm', 'matplotlib') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_argparse_lives_only_in_the_command_layer():
    import ast
    from pathlib import Path

    package = Path(__file__).resolve().parents[1] / "deploykit"
    # checkpoints.py names argparse.Namespace as data that timm training checkpoints pickle (an allowed
    # global when unpickling weights), not to parse anything.
    allowed = {"checkpoints.py"}
    found = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package).as_posix()
        if relative.startswith("cli/") or relative in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) else []
            found += [f"deploykit/{relative}:{node.lineno}" for name in names if name == "argparse"]
    assert not found, f"argparse outside deploykit/cli/: {found}"
