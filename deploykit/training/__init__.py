"""Supernet training, progressive subnet training and the baselines (DESIGN.md §1.2, §1.4).

One module per concern: ``config`` (frozen settings), ``schedule`` (λ ramp, learning rate, sampled
pruned sets: functions of the step alone), ``losses`` (CE + distillation), ``weights`` (loading local
checkpoints by name or by position), ``distributed`` (torchrun / DDP), ``checkpoint`` (atomic files,
resume), ``loop`` (the shared training loop), ``evaluate`` (top-1/loss, the supernet proxy) and one
module per stage: ``baseline``, ``supernet``, ``progressive``.
"""

from deploykit.training.baseline import BaselineResult, train_baseline
from deploykit.training.config import DistillConfig, OptimConfig, RunConfig, SubnetConfig, SupernetConfig
from deploykit.training.evaluate import Supernet, evaluate, evaluate_subnet, load_supernet
from deploykit.training.losses import distillation_loss, training_loss
from deploykit.training.progressive import SubnetResult, train_subnet
from deploykit.training.schedule import learning_rate, ramp_lambda, sample_pruned
from deploykit.training.supernet import SupernetResult, train_supernet
from deploykit.training.weights import load_model_weights

__all__ = [
    "BaselineResult",
    "DistillConfig",
    "OptimConfig",
    "RunConfig",
    "SubnetConfig",
    "SubnetResult",
    "Supernet",
    "SupernetConfig",
    "SupernetResult",
    "distillation_loss",
    "evaluate",
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
