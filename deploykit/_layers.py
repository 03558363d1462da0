"""The import rule of the package, as data: which module may import which.

deploykit is built in layers, top first in :data:`LAYERS`. Every module belongs to one *unit*: the
longest name in :data:`LAYERS` that is the module's dotted name (relative to ``deploykit``) or a
package above it, so ``latency.table`` is in the unit ``latency`` and ``measure.host`` in ``measure``.
The package's ``__init__`` is the unit ``__init__``. A module may import

- any module of its own unit (a package is free inside; cycles are still refused);
- any module of a unit in a lower layer;
- a unit of its own layer only where :data:`SIDEWAYS` says so.

Cycles between modules are refused everywhere, deferred (function-level) imports included: a
function-level import is still an edge, it only runs later. Imports under ``if TYPE_CHECKING:`` never
run, so they cannot close a cycle and are left out of the cycle check; they must still go downward.
``tests/test_imports.py`` checks every import in the package against these tables and names each
offending edge with its file and line.
"""

from __future__ import annotations

# Top first. Each tuple is one layer; its names are units that know nothing of each other unless
# SIDEWAYS lets them.
LAYERS: tuple[tuple[str, ...], ...] = (
    # parses, calls one library function, prints; the only place with argparse (the pipeline and the
    # Python API take the config objects themselves)
    ("cli",),
    ("pipeline",),  # `deploykit run`: the stages in order
    # The stages. A stage gets what another stage would compute as an argument (search's accuracy
    # proxies take an evaluation function; they never import training).
    ("search", "verify", "results_table", "report", "training", "latency", "remote"),
    ("modelfile",),  # a pruned model's architecture record + weights, rebuilt through prune
    ("__init__",),  # the package root: `__version__`, and `prunable`, `PrunableNet` imported lazily
    ("prune",),  # the prunable network
    ("blocks",),  # one module per family, the λ blends, the registry
    ("reparam",),  # pure tensor math
    # The bottom: services any layer above may use; they know nothing of pruning.
    # The measuring service: one ONNX file timed on a target in a fresh process, the machine's
    # fingerprint, the contention guard, the measuring host. latency measures through it, and the
    # device agent (remote) serves the same measurements on its machine.
    ("measure",),
    ("runtimes", "export", "models", "data"),
    ("paired",),  # a model timed as a ratio to a reference in one process, on protocol's rules
    ("targets", "protocol", "subnet", "checkpoints", "macs", "deployment"),
    ("fileio", "shapes", "runsettings"),
    ("checks",),  # argument and value checks (an integer in a range, a finite number)
    ("errors", "progress", "clock", "_layers"),
)

# Stage → the stages of its own layer it may import. Everything else in a layer is independent.
# Each entry is one stage reading another stage's artifact. Ranking the read stage a layer lower
# instead would let every other stage import it too (training and remote would then reach latency,
# search would reach verify), so the stages stay one layer and these arrows are named one by one.
SIDEWAYS: dict[str, tuple[str, ...]] = {
    # search reads the latency table and its predictor (the budget); latency never searches.
    "search": ("latency",),
    # verify compares the measured latency with a table's prediction and checks the table's
    # identity; latency never verifies.
    "verify": ("latency",),
    # the results table reads verify reports; verify never builds a results table.
    "results_table": ("verify",),
}


def unit_of(module: str) -> str:
    """The unit of ``module`` (dotted, relative to ``deploykit``; ``__init__`` for the package root)."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        name = ".".join(parts[:end])
        if name in _LAYER_OF:
            return name
    raise KeyError(f"deploykit.{module} is in no layer of deploykit._layers.LAYERS")


def layer_of(unit: str) -> int:
    """The layer index of ``unit`` (0 is the top)."""
    return _LAYER_OF[unit]


def may_import(importer: str, imported: str) -> bool:
    """Whether module ``importer`` may import module ``imported`` (both dotted, relative)."""
    source, target = unit_of(importer), unit_of(imported)
    if source == target or layer_of(target) > layer_of(source):
        return True
    return layer_of(target) == layer_of(source) and target in SIDEWAYS.get(source, ())


_LAYER_OF: dict[str, int] = {unit: depth for depth, layer in enumerate(LAYERS) for unit in layer}
