"""Supernet training, progressive subnet training and the baselines (docs/method.md).

One module per concern: ``config`` (frozen settings), ``schedule`` (λ ramp, learning rate, sampled
pruned sets: functions of the step alone), ``losses`` (CE + distillation), ``distributed`` (torchrun /
DDP), ``checkpoint`` (atomic files, resume), ``loop`` (the shared training loop), ``evaluation``
(top-1/loss, one subnet of a supernet), ``heldout`` (held-out data that judges subnets: what the
search's proxies are given) and one module per stage: ``baseline``, ``supernet``, ``progressive``.
Weights are loaded by :mod:`deploykit.checkpoints` (``load_model_weights`` is re-exported here). The
names below are imported on first use.
"""

import importlib

_HOMES = {
    "BaselineResult": "deploykit.training.baseline",
    "DistillConfig": "deploykit.training.config",
    "OptimConfig": "deploykit.training.config",
    "ProxyData": "deploykit.training.heldout",
    "RunConfig": "deploykit.training.config",
    "SubnetConfig": "deploykit.training.config",
    "SubnetResult": "deploykit.training.progressive",
    "Supernet": "deploykit.training.evaluation",
    "SubnetEvaluator": "deploykit.training.heldout",
    "SupernetConfig": "deploykit.training.config",
    "SupernetResult": "deploykit.training.supernet",
    "distillation_loss": "deploykit.training.losses",
    "evaluate": "deploykit.training.evaluation",
    "evaluate_original": "deploykit.training.baseline",
    "evaluate_subnet": "deploykit.training.evaluation",
    "learning_rate": "deploykit.training.schedule",
    "load_model_weights": "deploykit.checkpoints",
    "load_supernet": "deploykit.training.evaluation",
    "ramp_lambda": "deploykit.training.schedule",
    "sample_pruned": "deploykit.training.schedule",
    "train_baseline": "deploykit.training.baseline",
    "train_subnet": "deploykit.training.progressive",
    "train_supernet": "deploykit.training.supernet",
    "training_loss": "deploykit.training.losses",
}

__all__ = [
    "BaselineResult",
    "DistillConfig",
    "OptimConfig",
    "ProxyData",
    "RunConfig",
    "SubnetConfig",
    "SubnetEvaluator",
    "SubnetResult",
    "Supernet",
    "SupernetConfig",
    "SupernetResult",
    "distillation_loss",
    "evaluate",
    "evaluate_original",
    "evaluate_subnet",
    "learning_rate",
    "load_model_weights",
    "load_supernet",
    "ramp_lambda",
    "sample_pruned",
    "train_baseline",
    "train_subnet",
    "train_supernet",
    "training_loss",
]


def __getattr__(name: str):
    # Imported on first use (PEP 562): `deploykit --help` and the option parsers need no torch.
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'deploykit.training' has no attribute {name!r}")
