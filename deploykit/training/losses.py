"""Cross-entropy plus distillation from the frozen original (docs/method.md)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from deploykit.training.config import DistillConfig


def distillation_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """``T² · KL(softmax(t/T) ‖ softmax(s/T))``, summed over classes, averaged over the batch.

    The T² factor keeps the gradient scale independent of the temperature (Hinton et al., 2015).
    """
    log_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


def training_loss(logits: Tensor, labels: Tensor, teacher_logits: Tensor | None,
                  distill: DistillConfig | None) -> tuple[Tensor, Tensor, Tensor]:
    """(total, cross-entropy, distillation); distillation is 0 without a teacher."""
    ce = F.cross_entropy(logits.float(), labels)
    if teacher_logits is None or distill is None or distill.weight == 0:
        return ce, ce.detach(), ce.new_zeros(())
    kd = distillation_loss(logits, teacher_logits, distill.temperature)
    return ce + distill.weight * kd, ce.detach(), kd.detach()
