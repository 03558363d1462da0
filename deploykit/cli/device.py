"""The device agent: ``deploykit serve`` (run it on the target machine) and ``deploykit device`` (ask it
what it serves, or time a file on it)."""

from __future__ import annotations

import json

from deploykit.cli.args import add_protocol_arguments, protocol_from_args, size_argument


def add_serve(sub) -> None:
    from deploykit.remote.server import ServeConfig as d  # its defaults

    p = sub.add_parser(
        "serve", help="run the device agent: measure ONNX files sent from other machines on this one",
        description="Run on the machine a target stands for (an ARM board, a GPU server): an HTTP agent that"
                    " measures ONNX files sent by --device URL on profile, lut check, lut anchor, verify and"
                    " run (and by `deploykit device`) exactly as a local measurement would: the local "
                    "backend, the sent protocol, a fresh worker process; verify's numerics run there too "
                    "(seeded inputs, outputs sent back as arrays). Every request needs the token in "
                    "--token-file (refuses to start without one). Uploads are ONNX only, streamed to a "
                    "private temporary directory, size-limited and checked with the ONNX checker before "
                    "anything runs; one measurement at a time (others queue), each killed at --timeout. "
                    "Listens on 127.0.0.1 unless --host says otherwise; beyond localhost, give "
                    "--tls-cert/--tls-key. Needs the `remote` extra (starlette, uvicorn). Stops on Ctrl-C. "
                    "Example: deploykit serve --token-file ~/.deploykit-token --host 0.0.0.0 --tls-cert "
                    "cert.pem --tls-key key.pem")
    p.add_argument("--token-file", required=True, metavar="FILE",
                   help="file holding the token clients must send (one word, ≥ 16 characters; chmod 600)")
    p.add_argument("--host", default=d.host,
                   help=f"address to listen on (default: {d.host}; 0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=d.port, help=f"port (default: {d.port}; 0: any free port)")
    p.add_argument("--targets", default=None, metavar="T,...",
                   help="targets to serve, names or YAML paths (default: every target available here)")
    p.add_argument("--tls-cert", default=None, metavar="FILE", help="TLS certificate (PEM), with --tls-key")
    p.add_argument("--tls-key", default=None, metavar="FILE", help="TLS private key (PEM), with --tls-cert")
    p.add_argument("--max-upload-mb", type=float, default=d.max_upload_mb, metavar="MB",
                   help="largest ONNX upload in MB; bigger ones are refused while streaming "
                        f"(default: {d.max_upload_mb:g})")
    p.add_argument("--timeout", type=float, default=d.timeout_s, metavar="S",
                   help="longest measurement in seconds; its worker is killed then "
                        f"(default: {d.timeout_s:g})")
    p.add_argument("--max-queue", type=int, default=d.max_queue, metavar="N",
                   help="most measure requests admitted at once; more are told to retry "
                        f"(default: {d.max_queue})")
    p.add_argument("--header-timeout", type=float, default=d.header_timeout_s, metavar="S",
                   help="a connection whose request headers are not all in after S seconds is closed "
                        f"(default: {d.header_timeout_s:g})")
    p.add_argument("--body-timeout", type=float, default=d.body_timeout_s, metavar="S",
                   help="an upload from which nothing arrives for S seconds is refused, 408 "
                        f"(default: {d.body_timeout_s:g})")
    p.add_argument("--max-threads", type=int, default=d.max_threads, metavar="N",
                   help="most intra-op threads a request's protocol may ask for (default: the CPUs here)")
    p.add_argument("--max-input-elements", type=int, default=d.max_input_elements, metavar="N",
                   help="most elements in a request's input shape; more is a 422 "
                        f"(default: {d.max_input_elements})")
    p.add_argument("--max-reply-mb", type=float, default=d.max_reply_mb, metavar="MB",
                   help="largest reply (a run's outputs) in MB; a larger one is a 422 "
                        f"(default: {d.max_reply_mb:g})")
    p.set_defaults(func=run_serve)


def run_serve(args) -> int:
    from pathlib import Path

    from deploykit.remote.server import ServeConfig, serve

    names = tuple(n.strip() for n in args.targets.split(",") if n.strip()) if args.targets else ()
    serve(ServeConfig(token_file=Path(args.token_file), host=args.host, port=args.port, targets=names,
                      tls_cert=Path(args.tls_cert) if args.tls_cert else None,
                      tls_key=Path(args.tls_key) if args.tls_key else None,
                      max_upload_mb=args.max_upload_mb, timeout_s=args.timeout, max_queue=args.max_queue,
                      header_timeout_s=args.header_timeout, body_timeout_s=args.body_timeout,
                      max_threads=args.max_threads, max_input_elements=args.max_input_elements,
                      max_reply_mb=args.max_reply_mb))
    return 0


def add_device(sub) -> None:
    from deploykit.remote.client import RetryPolicy
    from deploykit.remote.wire import DEFAULT_PORT

    p = sub.add_parser(
        "device", help="ask a device agent (`deploykit serve`) what it serves, or measure a file on it",
        description="Talk to a device agent started with `deploykit serve`: show its version, queue, "
                    "targets (served, or why not) and machine fingerprint; with --measure, time an ONNX "
                    "file on one of its targets, as `deploykit verify` would time it locally. The token "
                    "comes from --token-file or $DEPLOYKIT_DEVICE_TOKEN. Connection failures are retried "
                    "with backoff; an agent that stops answering is one error line (exit 2). Example: "
                    f"deploykit device https://board:{DEFAULT_PORT} --ca-file cert.pem --measure model.onnx "
                    "--target arm-cortex-a76")
    p.add_argument("url", metavar="URL",
                   help=f"the agent, e.g. http://127.0.0.1:{DEFAULT_PORT} or https://board:{DEFAULT_PORT}")
    p.add_argument("--token-file", default=None, metavar="FILE",
                   help="file holding the agent's token (default: $DEPLOYKIT_DEVICE_TOKEN)")
    p.add_argument("--ca-file", default=None, metavar="FILE",
                   help="CA or self-signed certificate to verify an https agent with (default: system CAs)")
    p.add_argument("--retries", type=int, default=RetryPolicy.attempts, metavar="N",
                   help="tries in all for a connection that fails or an agent that is busy "
                        f"(default: {RetryPolicy.attempts})")
    p.add_argument("--measure", default=None, metavar="MODEL.onnx", help="an ONNX file to time on the device")
    p.add_argument("--target", default=None, help="the target to time it on (with --measure)")
    p.add_argument("--batch", type=int, default=None, metavar="B",
                   help="batch for a dynamic-batch file (default: the file's, else the target's)")
    p.add_argument("--input-size", type=size_argument, default=None, metavar="SIZE",
                   help="input size for a file with dynamic height/width (default: the target's)")
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="longest measurement in seconds (the agent's --timeout caps it)")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    add_protocol_arguments(p)
    p.set_defaults(func=run_device)


def run_device(args) -> int:
    from deploykit.errors import ConfigError
    from deploykit.remote.client import DeviceClient, RetryPolicy, describe_device, describe_measurement

    client = DeviceClient.connect(args.url, token_file=args.token_file, ca_file=args.ca_file,
                                  retry=RetryPolicy(attempts=args.retries))
    if args.measure is None:
        if args.target is not None:
            raise ConfigError("--target goes with --measure MODEL.onnx")
        info = client.info()
        print(json.dumps(info, indent=2) if args.format == "json" else describe_device(client.url, **info))
        return 0
    if args.target is None:
        raise ConfigError("--measure needs --target (see `deploykit device URL` for what it serves)")
    from deploykit.targets import load_target
    from deploykit.verify import onnx_input_shape

    target = load_target(args.target)
    shape = onnx_input_shape(args.measure, batch=args.batch, input_size=args.input_size,
                             default_batch=target.batch, default_size=target.input_size)
    result = client.measure_remote(args.measure, target=target, protocol=protocol_from_args(args),
                                   input_shape=shape, timeout_s=args.timeout)
    print(json.dumps(result.as_dict(), indent=2) if args.format == "json" else describe_measurement(result))
    return 0
