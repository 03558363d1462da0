"""Remote devices: the device agent (``deploykit serve``) and its client.

The agent runs on the machine a target stands for (an ARM board, a GPU server) and measures ONNX
files it is sent exactly as a local measurement would (:func:`deploykit.measure.client.measure_onnx`:
a fresh worker process, the same backend and protocol). :class:`deploykit.remote.client.DeviceClient`
measures through it with the same call signature as ``measure_onnx``, and
:class:`deploykit.remote.host.RemoteHost` puts it behind the measuring hook every stage uses
(``--device URL``). Modules:

- ``wire``: what travels between the two (measure and run requests, error replies, token files; a
  run's outputs travel as :class:`deploykit.measure.outputs.SeededOutputs`);
- ``device``: what the agent serves here (targets, fingerprint, upload checks), no web framework;
- ``server``: the HTTP service (starlette + uvicorn, the ``remote`` extra);
- ``client``: the client, standard library only;
- ``host``: the client as a :class:`deploykit.measure.host.MeasureHost` (one table, one machine);
- ``local``: an agent on this machine in a subprocess (tests, benchmarks, trying it out).
"""
