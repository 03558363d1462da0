"""The argument builders more than one command uses, and the argparse types: the one home of the
command line's shared options.

Each ``add_X_arguments(parser)`` declares a group of options; its ``X_from_args(args)`` builds the
library's config object from them. Defaults and help texts come from the library's config objects and
constants (``Protocol()``, ``EndToEndOptions``, ``DEFAULT_PORT``, ...), never typed again here. Importing
this module loads nothing heavy (no torch, no pandas): ``deploykit --help`` and the device agent's
command line build every parser.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Callable, Iterable
from dataclasses import fields
from typing import Any

from deploykit.errors import ConfigError
from deploykit.shapes import parse_size

DEFAULT_MODEL = "convnext_tiny"  # the model `blocks` and `profile` look at when none is named
WEIGHTS_FORMATS = ("a .pt/.pth/.bin/.safetensors file (a state dict or a timm training checkpoint, whose EMA "
                   "weights are used when present), a Hugging Face-style folder (model.safetensors + "
                   "config.json) or package:efficientnet_lite0; nothing is unpickled")
UNSAFE_PICKLE_HELP = ("also load a whole-module torch.save pickle (such as merged.pt of deploykit before "
                      "model files). DANGER: unpickling runs code stored in the file; use it only for "
                      "files you made or trust")


def default_of(function: Callable[..., Any], name: str) -> Any:
    """The default of ``function``'s parameter ``name``: an option's default read off the library call
    it feeds, so the two cannot drift."""
    default = inspect.signature(function).parameters[name].default
    if default is inspect.Parameter.empty:
        raise TypeError(f"{function.__qualname__}({name}) has no default")
    return default


# --- argparse types: the library's parsers, their ConfigError as a usage error -----------------------

def size_argument(text: str) -> tuple[int, int]:
    """:func:`deploykit.shapes.parse_size` as an argparse ``type``: argparse prints the message as a usage
    error."""
    try:
        return parse_size(text)
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def size_text(size: tuple[int, int]) -> str:
    """An input size as the options take it: ``224``, or ``96x128`` where height and width differ."""
    return str(size[0]) if size[0] == size[1] else f"{size[0]}x{size[1]}"


def on_off(text: str) -> bool:
    """``on``/``off`` (or ``true``/``false``) as an argparse ``type``."""
    value = {"on": True, "off": False, "true": True, "false": False}.get(text.strip().lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"expected on or off, got {text!r}")
    return value


# --- the measuring device (--device URL) --------------------------------------------------------------

def add_device_arguments(parser: argparse.ArgumentParser, *, what: str, per_target: bool = False) -> None:
    """Declare ``--device URL --token-file FILE --device-ca FILE --wait-quiet S``: measure on a device
    agent, or wait for quiet here."""
    from deploykit.measure.contention import DEFAULT_WAIT_QUIET_S, WAIT_QUIET_ENV
    from deploykit.remote.wire import DEFAULT_PORT

    group = parser.add_argument_group(
        "measuring device", f"{what} on a device agent (`deploykit serve` on the target machine) instead "
                            "of this machine; the table or report then records the device's runtime and "
                            "machine fingerprint and its URL")
    several = ("; with several targets, TARGET=URL for each target measured on an agent, comma-separated "
               f"(cpu-openvino=https://server:{DEFAULT_PORT}); the others are measured here")
    several = several if per_target else ""
    group.add_argument("--device", default=None, metavar="URL",
                       help=f"the agent, e.g. https://board:{DEFAULT_PORT}, or "
                            f"http://127.0.0.1:{DEFAULT_PORT} through an SSH tunnel{several} "
                            "(default: measure here)")
    group.add_argument("--token-file", default=None, metavar="FILE",
                       help="file holding the agent's token (default: $DEPLOYKIT_DEVICE_TOKEN)")
    group.add_argument("--device-ca", default=None, metavar="FILE",
                       help="CA or self-signed certificate to verify an https agent with (default: the "
                            "system's CAs)")
    group.add_argument("--wait-quiet", dest="wait_quiet", type=float, default=None, metavar="S",
                       help="measuring here: while other processes use the cores a measurement needs, "
                            "wait up to S seconds for quiet, then measure and flag the figure as "
                            f"contended (default: ${WAIT_QUIET_ENV} or {DEFAULT_WAIT_QUIET_S:g})")


def measuring_host(args: argparse.Namespace):
    """Where the command measures: the --device agent, or this machine."""
    from deploykit.remote.host import measuring_host as host

    return host(args.device, token_file=args.token_file, ca_file=args.device_ca, wait_quiet_s=args.wait_quiet)


def measuring_hosts(args: argparse.Namespace, urls: dict[str, str | None]) -> dict:
    """Where each target is measured (``urls`` from :func:`deploykit.pipeline.device_urls`): its agent,
    or this machine where its URL is None; the token and CA files go to the agents."""
    from deploykit.remote.host import measuring_host as host

    return {name: host(url, token_file=args.token_file if url else None,
                       ca_file=args.device_ca if url else None, wait_quiet_s=args.wait_quiet)
            for name, url in urls.items()}


# --- the measurement protocol -------------------------------------------------------------------------

def add_protocol_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``--warmup-time --warmup-iters --min-time --min-iters --max-ci --max-repeats --max-time
    --threads --spinning``; each dest is the :class:`deploykit.protocol.Protocol` field it sets."""
    from deploykit.protocol import Protocol

    d = Protocol()
    group = parser.add_argument_group(
        "measurement protocol",
        "warm up, then sample rounds of at least a time and a count until the confidence interval of "
        "the median is narrow enough, or a bound is hit")
    group.add_argument("--warmup-time", dest="warmup_s", type=float, default=d.warmup_s, metavar="S",
                       help=f"minimum warm-up time in seconds, runs discarded (default: {d.warmup_s})")
    group.add_argument("--warmup-iters", dest="warmup_iters", type=int, default=d.warmup_iters, metavar="N",
                       help=f"minimum number of warm-up runs (default: {d.warmup_iters})")
    group.add_argument("--min-time", dest="min_time_s", type=float, default=d.min_time_s, metavar="S",
                       help=f"minimum time of one sampling round in seconds (default: {d.min_time_s})")
    group.add_argument("--min-iters", dest="min_iters", type=int, default=d.min_iters, metavar="N",
                       help=f"minimum number of timed runs in one round (default: {d.min_iters})")
    group.add_argument("--max-ci", dest="max_ci", type=float, default=d.max_ci, metavar="F",
                       help=f"steady when the {d.confidence * 100:g}%% confidence interval of the median "
                            "has a half-width of at most this fraction of the median; else sample another "
                            f"round (default: {d.max_ci})")
    group.add_argument("--max-repeats", dest="max_repeats", type=int, default=d.max_repeats, metavar="N",
                       help=f"most sampling rounds per measurement (default: {d.max_repeats})")
    group.add_argument("--max-time", dest="max_time_s", type=float, default=d.max_time_s, metavar="S",
                       help="no new sampling round once this many seconds were spent sampling "
                            f"(default: {d.max_time_s})")
    group.add_argument("--threads", dest="threads", type=int, default=d.threads, metavar="N",
                       help="intra-op CPU threads (default: the target's setting; `auto` in a target "
                            "is chosen by a short probe when a profile starts)")
    group.add_argument("--spinning", dest="spinning", type=on_off, default=d.spinning, metavar="on|off",
                       help="onnxruntime CPU: idle intra-op threads spin (on) or sleep (off) "
                            "(default: the target's setting)")


def protocol_from_args(args: argparse.Namespace):
    """The :class:`deploykit.protocol.Protocol` the options of :func:`add_protocol_arguments` describe
    (missing ones: the defaults)."""
    from deploykit.protocol import Protocol

    return Protocol(**{f.name: getattr(args, f.name) for f in fields(Protocol)
                       if getattr(args, f.name, None) is not None})


# --- a measured profile's end-to-end phase ------------------------------------------------------------

def add_end_to_end_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``--predictor --fit-samples --holdout --paired``
    (:class:`deploykit.latency.options.EndToEndOptions`)."""
    from deploykit.latency.options import MAX_DESIGNED, PREDICTORS, EndToEndOptions

    d = EndToEndOptions  # its defaults
    group = parser.add_argument_group(
        "end-to-end phase (measured tables)",
        "after the isolated entries, whole subnets are measured: the predictor is fitted on designed and "
        "random ones, and its fidelity measured on held-out ones stored in the table")
    group.add_argument("--predictor", choices=PREDICTORS, default=d.predictor,
                       help="fitted: base + per-block + adjacent-pair terms fitted end to end, the isolated "
                            "entries as prior; isolated: the plain sum of entries (huge spaces); auto: "
                            f"fitted unless the model has more than {MAX_DESIGNED - 2} distinct prunable "
                            f"blocks (default: {d.predictor})")
    group.add_argument("--fit-samples", type=int, default=d.fit_samples, metavar="N",
                       help="random subnets measured for the fit, besides the designed ones: the unpruned "
                            "model, each identical-block group merged alone, all merged "
                            f"(default: {d.fit_samples})")
    group.add_argument("--holdout", type=int, default=d.holdout, metavar="N",
                       help="random subnets never used in fitting, on which the stored fidelity figures "
                            f"are measured; 0: none (default: {d.holdout})")
    add_paired_argument(group, timed="each end-to-end subnet", reference="the unpruned model",
                        over="the phase's processes")


def add_paired_argument(group, *, timed: str, reference: str, over: str) -> None:
    """Declare ``--paired/--no-paired`` (default None: :func:`deploykit.latency.options.pairs_by_default`)
    for a command that times ``timed`` against ``reference``, anchored on its median ``over``."""
    group.add_argument("--paired", action=argparse.BooleanOptionalAction, default=None,
                       help=f"time {timed} as a ratio to {reference} in the same process (alternating short "
                            f"slices); its ms = that ratio × {reference}'s median over {over}, so a fresh "
                            "process's fast or slow state cancels out. This machine only (a device agent "
                            "measures one file per request). Default: paired where the target runs on this "
                            "machine's CPU threads")


def end_to_end_from_args(args: argparse.Namespace):
    """The :class:`deploykit.latency.options.EndToEndOptions` of :func:`add_end_to_end_arguments`."""
    from deploykit.latency.options import EndToEndOptions

    return EndToEndOptions(predictor=args.predictor, fit_samples=args.fit_samples, holdout=args.holdout,
                           paired=getattr(args, "paired", None))


# --- data ---------------------------------------------------------------------------------------------

def add_strict_images_argument(group) -> None:
    """Declare ``--strict-images`` (:attr:`deploykit.data.DataConfig.strict_images`)."""
    group.add_argument("--strict-images", action="store_true",
                       help="fail on an image file that cannot be decoded (default: skip it, counted "
                            "and named in the data summary)")


# --- output -------------------------------------------------------------------------------------------

def print_notes(command: str, notes: Iterable[str]) -> None:
    """The library's notes on stderr, one line each, named by the command."""
    for note in notes:
        print(f"deploykit {command}: note: {note}", file=sys.stderr)


def note_printer(command: str) -> Callable[[str], None]:
    """A callback that prints one library note as :func:`print_notes` does."""
    return lambda note: print_notes(command, (note,))
