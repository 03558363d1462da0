"""How a measured profile ends (its end-to-end phase): the options and their command-line arguments.

Kept apart from :mod:`deploykit.latency.endtoend` so that building the command line imports nothing heavy.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from deploykit.checks import require_int
from deploykit.errors import ConfigError

PREDICTORS = ("auto", "fitted", "isolated")
DEFAULT_FIT_SAMPLES = 10
DEFAULT_HOLDOUT = 10
MAX_DESIGNED = 50         # auto: beyond this many designed subnets (groups + 2), the isolated predictor


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

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> EndToEndOptions:
        return cls(predictor=args.predictor, fit_samples=args.fit_samples, holdout=args.holdout,
                   paired=getattr(args, "paired", None))


def pairs_by_default(target, *, local: bool) -> bool:
    """Whether an end-to-end measurement on ``target`` is paired when not told: on this machine's CPU
    with more than one thread (or the runtime's default, all cores). Measured (docs/latency.md): two
    spinning threads on a sub-millisecond model gave held-out ρ 0.16 unpaired, 0.99 paired; one thread
    was as good unpaired (ρ 1.00, MAPE 0.4 %) at 60 % of the cost. A device agent measures one file per
    request, so it is never paired by default."""
    from deploykit.runtimes import check_target

    return local and target.threads != 1 and check_target(target).runs_on_cpu_threads(target)


def add_end_to_end_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``--predictor --fit-samples --holdout``."""
    group = parser.add_argument_group(
        "end-to-end phase (measured tables)",
        "after the isolated entries, whole subnets are measured: the predictor is fitted on designed and "
        "random ones, and its fidelity measured on held-out ones stored in the table")
    group.add_argument("--predictor", choices=PREDICTORS, default="auto",
                       help="fitted: base + per-block + adjacent-pair terms fitted end to end, the isolated "
                            "entries as prior; isolated: the plain sum of entries (huge spaces); auto: "
                            f"fitted unless the model has more than {MAX_DESIGNED - 2} distinct prunable "
                            "blocks (default: auto)")
    group.add_argument("--fit-samples", type=int, default=DEFAULT_FIT_SAMPLES, metavar="N",
                       help="random subnets measured for the fit, besides the designed ones: the unpruned "
                            "model, each identical-block group merged alone, all merged "
                            f"(default: {DEFAULT_FIT_SAMPLES})")
    group.add_argument("--holdout", type=int, default=DEFAULT_HOLDOUT, metavar="N",
                       help="random subnets never used in fitting, on which the stored fidelity figures "
                            f"are measured; 0: none (default: {DEFAULT_HOLDOUT})")
    group.add_argument("--paired", action=argparse.BooleanOptionalAction, default=None,
                       help="time each end-to-end subnet as a ratio to the unpruned model in the same "
                            "process (alternating short slices), its ms = that ratio × the unpruned "
                            "model's median over the phase's processes: steadier where fresh processes land "
                            "in different states (this machine only). Default: paired where the target "
                            "runs on more than one CPU thread, measured here (docs/latency.md)")
