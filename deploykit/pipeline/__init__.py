"""``deploykit run``: every stage in order, in one run directory, resumable (docs/method.md).

Each stage writes its artifact atomically and is skipped when that artifact is already there, so a run
that was interrupted continues where it stopped (an interrupted training resumes from its last
finished epoch, an interrupted profile from its last entry)::

    baseline          RUN/baseline/model.pt, result.json      train the original (or evaluate --weights)
    profile           RUN/profile/<model>_<size>_b<B>.csv     block latency table on the target
    budgets           (nothing written)                       every budget reachable, per the table
    supernet          RUN/supernet/supernet.pt                weight-sharing supernet over the blocks
                                                              whose merged form the table says is faster
    export original   RUN/baseline/model.onnx
    verify original   RUN/baseline/verify-<target>.json      numerics, latency, table prediction
    for each budget B (tightest first where the budgets share a unit):
      search B        RUN/budget-B/subnet.json                best supernet top-1 within the budget,
                                                              starting from the others' choices too
      train B         RUN/budget-B/merged.safetensors         progressive subnet training, merged
                      RUN/budget-B/result.json                (a model file: tensors + architecture);
                                                              copied from another budget that chose
                                                              the same blocks (same recipe, same weights)
      export B        RUN/budget-B/model.onnx
      verify B        RUN/budget-B/verify-<target>.json      … and speed-up against the original,
                                                              measured interleaved in the same run
                                                              (another budget's report where the file
                                                              and weights are byte for byte its own)
    continue original RUN/original-continued/model.pt, …      the equal-budget reference: the original
                                                              trained subnet-epochs more with subnet
                                                              training's recipe (distillation from
                                                              itself, same lr), nothing pruned
    export continued  RUN/original-continued/model.onnx
    verify continued  RUN/original-continued/verify-<target>.json
    table             RUN/table.md, table.csv, pareto.png     speed vs accuracy; each Δ top-1 against
                                                              the unpruned model of equal budget; one
                                                              round-robin measurement (identical files
                                                              measured once)

Why "original, continued": the pruned variants start from the original's weights and train
``subnet_epochs`` more (the supernet only chooses the blocks; its weights are not reused), so comparing
them with the original as it was credits pruning with what those extra epochs give. The reference
trains the same weights for the same epochs with the same loss (cross-entropy + distillation from the
original), learning rate and seed — everything as for a pruned variant except the pruning — so its Δ
measures pruning alone. (Plain cross-entropy would change the loss as well as the architecture.)

``RUN/run.json`` holds the settings and each stage's wall time. A rerun with other settings is
refused (choose another ``--out``, or ``--fresh`` to start over), except that budgets may be added.
Its ``outputs`` list names each entry of the run directory the run created, recorded before the stage
that writes it starts: ``--fresh`` deletes those (names deploykit writes, nothing else) and never a
user's other files in the folder.

Where it measures: the profile and verify stages measure through one
:class:`deploykit.measure.host.MeasureHost` — this machine, or a device agent (``--device URL``,
``deploykit serve`` on the target machine); training, search and export stay here. With ``--table
TABLE`` (a table measured elsewhere, for this model, input size, batch and target) the profile stage
copies it into the run instead of measuring; the verify stages still need the target, here or through
``--device``. Which of those is missing is said before anything is written.

Several targets (``--target cpu-ort,cpu-openvino``): one subnet per budget that fits the budget on
*every* target. Each target is profiled (``RUN/profile/<target>/<table>.csv``, stage ``profile on
<target>``); each budget (a fraction, applied to every target's own unpruned prediction) is one joint
search over all the tables (:func:`deploykit.search.joint_search`, exact; subnet.json says which
target's budget binds), one training and one export; every ONNX is verified on every target
(``verify … on <target>``, each with its own table's run settings) and the table stage measures every
target round-robin (``latency-<target>.json`` each). A device agent serves one target: ``--device
TARGET=URL[,TARGET=URL]`` names the agent of each target measured on one, the others are measured here;
``--table`` (one target's table) does not apply. Beside each ONNX, one
``model.TARGET.settings.json`` per target holds the run settings of that target's table.
"""

from __future__ import annotations

from deploykit.pipeline.config import (
           PipelineConfig,
           budget_label,
           default_run_dir,
           demo_defaults,
           device_urls,
)
from deploykit.pipeline.rundir import RunLayout, Stage
from deploykit.pipeline.runner import Pipeline, PipelineResult

__all__ = ["Pipeline", "PipelineConfig", "PipelineResult", "RunLayout", "Stage", "budget_label",
           "default_run_dir", "demo_defaults", "device_urls"]
