"""The options of the latency commands' library calls and their defaults: how a measured profile ends
(its end-to-end phase), how many subnets a fidelity check measures, how many rounds re-anchor a table.

Kept apart from :mod:`deploykit.latency.endtoend`, :mod:`~deploykit.latency.fidelity` and
:mod:`~deploykit.latency.anchor` so that the command line reads these defaults without loading pandas.
"""

from __future__ import annotations

from dataclasses import dataclass

from deploykit.checks import require_int
from deploykit.errors import ConfigError

PREDICTORS = ("auto", "fitted", "isolated")
DEFAULT_FIT_SAMPLES = 10
DEFAULT_HOLDOUT = 10
MAX_DESIGNED = 50         # auto: beyond this many designed subnets (groups + 2), the isolated predictor
CHECK_SAMPLES = 40        # `lut check`: random subnets measured end to end
CHECK_SEED = 0            # `lut check`: seed of that sample
# `lut check`: the largest relative difference between the unpruned model measured by the check and the
# table's own end-to-end row (measured during the profile) for which a calibration is stored without
# --force-store.
DRIFT_LIMIT = 0.25
ANCHOR_ROUNDS = 3         # `lut anchor`: interleaved measurements of each anchor model (the median is kept)


@dataclass(frozen=True)
class EndToEndOptions:
    """Which predictor, how many random fit and held-out subnets, the plan's seed.

    ``fitted`` measures the designed subnets (unpruned, each identical-block group merged alone, all
    merged) plus ``fit_samples`` random ones and fits the predictor on them; ``isolated`` keeps the
    isolated sum (for huge spaces: nothing grows with the number of blocks); ``auto`` fits unless the
    designed subnets would exceed :data:`MAX_DESIGNED`. Either way ``holdout`` further random subnets,
    never used in fitting, give the fidelity figures stored in the table (0: none). ``paired`` times
    each subnet as a ratio to the unpruned model in the same process (:mod:`deploykit.paired`), its
    milliseconds that ratio × the unpruned model's median over all the phase's processes; None (auto):
    paired where :func:`pairs_by_default` says the measurement needs it.
    """

    predictor: str = "auto"
    fit_samples: int = DEFAULT_FIT_SAMPLES
    holdout: int = DEFAULT_HOLDOUT
    seed: int = 0
    paired: bool | None = None  # each subnet timed as a ratio to the unpruned model in one process

    def __post_init__(self) -> None:
        if self.predictor not in PREDICTORS:
            raise ConfigError(f"--predictor must be one of {', '.join(PREDICTORS)}, got {self.predictor!r}")
        for name, value in (("--fit-samples", self.fit_samples), ("--holdout", self.holdout),
                            ("seed", self.seed)):
            require_int(name, value, least=0)

    def resolve(self, groups: int) -> str:
        """``fitted`` or ``isolated`` for a model with this many identical-block groups."""
        if self.predictor != "auto":
            return self.predictor
        return "fitted" if groups + 2 <= MAX_DESIGNED else "isolated"

    def as_dict(self) -> dict:
        return {"predictor": self.predictor, "fit_samples": self.fit_samples, "holdout": self.holdout,
                "seed": self.seed, "paired": self.paired}


def pairs_by_default(target, *, local: bool) -> bool:
    """Whether an end-to-end measurement on ``target`` is paired when not told: on this machine's CPU,
    whatever the threads. Measured (docs/latency.md): two spinning threads on a sub-millisecond model
    gave held-out ρ 0.16 unpaired, 0.99 paired; one thread unpaired was as good as paired on a calm
    machine, but this project's VM also has windows of seconds to a minute in which everything runs
    ~30 % slower, and an unpaired subnet measured in one (its three held-out processes run back to back)
    is that much off: OpenVINO mobilenetv2_100 on one thread stored ρ 0.65, MAPE 13 % unpaired. A ratio
    to the unpruned model in the same process and window does not move. A device agent measures one
    file per request, so it is never paired by default."""
    from deploykit.runtimes import check_target

    return local and check_target(target).runs_on_cpu_threads(target)
