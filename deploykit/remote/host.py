"""A device agent as the place where the stages measure: :class:`RemoteHost` (``--device URL``).

It implements :class:`deploykit.measure.host.MeasureHost` with a :class:`DeviceClient`: availability,
runtime, device and fingerprint are the device's (asked of the agent), measurements and seeded runs
happen there. It also guards what "one table, one machine" needs: the device's fingerprint for a target
is pinned the first time it is seen, and a reply from a machine with another fingerprint (another agent
answering at the same URL, a runtime upgraded under it) is refused with one line naming what changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from deploykit.errors import ConfigError, DeviceError
from deploykit.measure.fingerprint import settings_text
from deploykit.measure.host import LocalHost, MeasureHost
from deploykit.remote.client import DeviceClient, RetryPolicy

NOT_SERVED = "not served by the device"

if TYPE_CHECKING:
    from deploykit.measure.fingerprint import Fingerprint
    from deploykit.measure.outputs import SeededOutputs
    from deploykit.protocol import Measurement, Protocol
    from deploykit.targets import Target


class RemoteHost(MeasureHost):
    """Measure on the device agent ``client`` talks to."""

    def __init__(self, client: DeviceClient):
        self.client = client
        self.url = client.url
        self._pinned: dict[str, Fingerprint] = {}   # target name → the device's fingerprint (its threads)
        self._load: list[float] | None = None

    def __repr__(self) -> str:
        return f"RemoteHost({self.url!r})"

    def describe(self) -> str:
        return f"the device at {self.url}"

    def availability(self, target: Target) -> tuple[bool, str]:
        """Asked of the agent: served there, or why not. A target the agent defines differently (another
        runtime, provider, precision, threads) is a ConfigError: the target files must agree."""
        refusal = self.client.not_served(target)
        return (True, "") if refusal is None else (False, f"it {refusal[1]}")

    def measure(self, onnx_path: str | Path, *, target: Target, protocol: Protocol,
                input_shape: Sequence[int], timeout_s: float | None = None) -> Measurement:
        result = self.client.measure_remote(onnx_path, target=target, protocol=protocol,
                                            input_shape=input_shape, timeout_s=timeout_s)
        self._check_same_machine(target, result.fingerprint)
        self._load = result.load_average
        return result.measurement

    def outputs(self, onnx_path: str | Path, *, target: Target, input_shape: Sequence[int], seed: int,
                n_inputs: int) -> SeededOutputs:
        result = self.client.run_remote(onnx_path, target=target, input_shape=input_shape, seed=seed,
                                        n_inputs=n_inputs)
        self._check_same_machine(target, result.fingerprint)
        self._load = result.load_average
        return replace(result.outputs, how=f"{result.outputs.how}, {self.describe()}")

    def runtime_info(self, target: Target) -> dict[str, str]:
        return self.client.runtime_info(target)

    def fingerprint(self, target: Target, *, threads: int | None) -> Fingerprint:
        """The device's fingerprint for ``target`` (pinned from now on), with ``threads`` and the
        target's other run settings. For a target
        the device does not serve (a table of another target, compared with this device), the device's
        machine with runtime version and device ``not served by the device``: it matches no table."""
        machine = self.client.fingerprint()
        served = machine.get("targets") if isinstance(machine.get("targets"), dict) else {}
        if target.name not in served and served:
            other = self._device_fingerprint(next(iter(served)), machine)
            return replace(other, runtime=target.runtime, runtime_version=NOT_SERVED,
                           provider=target.provider, device=NOT_SERVED, threads=threads,
                           settings=settings_text(target))
        fingerprint = self._device_fingerprint(target.name, machine)
        self._pin(target, fingerprint)
        return replace(fingerprint, threads=threads, settings=settings_text(target))

    def load_average(self) -> list[float] | None:
        if self._load is None:
            load = self.client.health().get("load_average")
            self._load = [float(v) for v in load] if isinstance(load, list) else None
        return self._load

    # --- one table, one machine --------------------------------------------------------------------

    def _device_fingerprint(self, name: str, machine: dict) -> Fingerprint:
        from deploykit.errors import TableError
        from deploykit.measure.fingerprint import Fingerprint

        try:
            return Fingerprint.from_dict(machine["targets"][name]["fingerprint"])
        except (KeyError, TypeError, TableError) as error:
            raise DeviceError(f"{self.describe()} sent no usable fingerprint for target {name} "
                              f"({error}); install the same deploykit version on both machines") from None

    def _pin(self, target: Target, fingerprint: Fingerprint) -> None:
        from deploykit.measure.fingerprint import differences

        pinned = self._pinned.setdefault(target.name, fingerprint)
        if pinned.id != fingerprint.id:
            changed = "; ".join(differences(pinned, fingerprint, names=("before", "now"))) or \
                f"fingerprint {pinned.id} before, {fingerprint.id} now"
            raise DeviceError(f"{self.describe()} is another machine than at the start of this run "
                              f"({changed}): another agent answers at that URL? Measurements of two "
                              "machines never mix; rerun against the machine this run began on")

    def _check_same_machine(self, target: Target, machine: dict) -> None:
        self._pin(target, self._device_fingerprint(target.name, machine))


def measuring_host(device: str | None, *, token_file: str | Path | None = None,
                   ca_file: str | Path | None = None, retry: RetryPolicy | None = None,
                   wait_quiet_s: float | None = None) -> MeasureHost:
    """Where the stages measure: the device agent at ``device`` (its token from ``token_file``, else
    ``$DEPLOYKIT_DEVICE_TOKEN``; TLS verified against ``ca_file``), or this machine when ``device`` is
    None. A token or CA file without a device is a ConfigError (it would be ignored). ``wait_quiet_s``:
    the contention guard's longest wait here (the agent guards its own machine)."""
    if device is None:
        if token_file is not None or ca_file is not None:
            raise ConfigError("--token-file and --device-ca go with --device URL")
        if wait_quiet_s is None:
            return LocalHost()
        from deploykit.measure.contention import GuardPolicy

        return LocalHost(GuardPolicy(wait_quiet_s=wait_quiet_s))
    options = {"retry": retry} if retry is not None else {}
    return RemoteHost(DeviceClient.connect(device, token_file=token_file, ca_file=ca_file, **options))
