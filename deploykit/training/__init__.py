"""Supernet training, progressive subnet training and the baselines (docs/method.md).

One module per concern: ``config`` (frozen settings), ``schedule`` (λ ramp, learning rate, sampled
pruned sets: functions of the step alone), ``losses`` (CE + distillation), ``distributed`` (torchrun /
DDP), ``checkpoint`` (atomic files, resume), ``loop`` (the shared training loop), ``evaluation``
(top-1/loss, one subnet of a supernet), ``heldout`` (held-out data that judges subnets: what the
search's proxies are given) and one module per stage: ``baseline``, ``supernet``, ``progressive``.
Weights are loaded by :mod:`deploykit.checkpoints` (``load_model_weights`` is re-exported here). The
names below are imported on first use.
"""

# Each public name and the module of this package that defines it (checkpoints: the package below).
_HOMES = {
    "BaselineResult": "baseline",
    "DistillConfig": "config",
    "HeldOutEvaluator": "heldout",
    "OptimConfig": "config",
    "ProxyData": "heldout",
    "RunConfig": "config",
    "SubnetConfig": "config",
    "SubnetResult": "progressive",
    "Supernet": "evaluation",
    "SupernetConfig": "config",
    "SupernetResult": "supernet",
    "distillation_loss": "losses",
    "evaluate": "evaluation",
    "evaluate_original": "baseline",
    "evaluate_subnet": "evaluation",
    "learning_rate": "schedule",
    "load_model_weights": "checkpoints",
    "load_supernet": "evaluation",
    "ramp_lambda": "schedule",
    "sample_pruned": "schedule",
    "train_baseline": "baseline",
    "train_subnet": "progressive",
    "train_supernet": "supernet",
    "training_loss": "losses",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    # Imported on first use (PEP 562): `deploykit --help` and the option parsers need no torch.
    if name in _HOMES:
        return getattr(_module(_HOMES[name]), name)
    raise AttributeError(f"module 'deploykit.training' has no attribute {name!r}")


def _module(home: str):
    """The module ``home``, imported now: one explicit import each, so that the import rule's test
    (tests/test_imports.py, which reads import statements) sees every edge."""
    if home == "baseline":
        from deploykit.training import baseline as module
    elif home == "config":
        from deploykit.training import config as module
    elif home == "evaluation":
        from deploykit.training import evaluation as module
    elif home == "heldout":
        from deploykit.training import heldout as module
    elif home == "losses":
        from deploykit.training import losses as module
    elif home == "progressive":
        from deploykit.training import progressive as module
    elif home == "schedule":
        from deploykit.training import schedule as module
    elif home == "supernet":
        from deploykit.training import supernet as module
    else:
        from deploykit import checkpoints as module
    return module
