"""A run directory: where each artifact lives (:class:`RunLayout`), the stages that write them
(:class:`Stage`), and ``run.json`` — its settings, stage times and the manifest of the entries the run
created, the only ones ``--fresh`` ever deletes."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploykit.errors import ConfigError
from deploykit.fileio import read_json
from deploykit.pipeline.config import PipelineConfig, budget_label

RUN_FILE = "run.json"
OUTPUTS_KEY = "outputs"   # run.json's manifest: the entries of the run directory the run created
FIXED_OUTPUTS = ("baseline", "profile", "supernet", "original-continued", "table.md", "table.csv",
                 "pareto.png")
BUDGET_FOLDER = re.compile(r"budget-[0-9][0-9.e+-]*(ms)?")


@dataclass(frozen=True)
class RunLayout:
    """Where every artifact of a run lives."""

    root: Path
    config: PipelineConfig
    target_name: str              # the first (or only) target
    table_name: str

    @property
    def several(self) -> bool:
        return len(self.config.targets) > 1

    @property
    def baseline(self) -> Path:
        return self.root / "baseline"

    @property
    def weights(self) -> Path:
        return self.baseline / "model.pt"

    @property
    def table(self) -> Path:
        return self.table_of(self.target_name)

    def table_of(self, target: str) -> Path:
        """A run of one target keeps its table in profile/; one of several, in profile/<target>/."""
        folder = self.root / "profile"
        return (folder / target if self.several else folder) / self.table_name

    @property
    def supernet(self) -> Path:
        return self.root / "supernet" / "supernet.pt"

    @property
    def continued(self) -> Path:
        """The equal-budget reference: the original trained on like the pruned variants."""
        return self.root / "original-continued"

    def onnx(self, folder: Path) -> Path:
        return folder / "model.onnx"

    def report(self, folder: Path, target: str | None = None) -> Path:
        return folder / f"verify-{target or self.target_name}.json"

    def budget(self, text: str) -> Path:
        from deploykit.search.budget import parse_budget

        return self.root / f"budget-{budget_label(parse_budget(text))}"


@dataclass(frozen=True)
class Stage:
    """One step: its name, whether its artifact is already there, and what runs it (→ one-line summary)."""

    name: str
    is_done: Callable[[], bool]
    run: Callable[[], str]
    artifact: Path | None = None
    also: tuple[Path, ...] = ()  # other files it writes outside its artifact's folder

    def writes(self, root: Path) -> list[str]:
        """The entries of the run directory this stage writes in (its manifest entries)."""
        paths = [self.artifact, *self.also] if self.artifact is not None else list(self.also)
        return [path.relative_to(root).parts[0] for path in paths]


def read_state(path: Path) -> dict[str, Any]:
    try:
        state = read_json(path, what="run file", kind=None)
    except ConfigError as error:
        raise ConfigError(f"{error}; pass --fresh to start the run over") from None
    if not isinstance(state, dict) or not isinstance(state.get("config"), dict):
        raise ConfigError(f"{path} is not a deploykit run file; pass --fresh to start the run over")
    state.setdefault("stages", {})
    return state


def earlier_outputs(path: Path, layout: RunLayout) -> list[str]:
    """The run directory entries an earlier run's run.json says it wrote, each one a name deploykit
    writes (a doctored manifest cannot name a user's file); see
    :meth:`deploykit.pipeline.runner.Pipeline._remove_earlier_run`."""
    try:
        state = read_state(path)
    except ConfigError:
        state = {}
    listed = state.get(OUTPUTS_KEY)
    if isinstance(listed, list):
        names = [name for name in listed if isinstance(name, str)]
    else:
        names = list(FIXED_OUTPUTS) + _budget_folders(layout, layout.config.budgets)
        config = state.get("config")
        if isinstance(config, dict) and isinstance(config.get("budgets"), list):
            names += _budget_folders(layout, config["budgets"])
    return [name for name in dict.fromkeys(names) if is_run_entry(name)]


def _budget_folders(layout: RunLayout, budgets: Any) -> list[str]:
    folders = []
    for text in budgets:
        try:
            folders.append(layout.budget(str(text)).name)
        except ConfigError:
            continue
    return folders


def is_run_entry(name: str) -> bool:
    """A name the pipeline writes directly in its run directory (and nothing that leads outside it)."""
    return name in FIXED_OUTPUTS or BUDGET_FOLDER.fullmatch(name) is not None


def remove_entry(path: Path) -> bool:
    """Delete the file or folder ``path`` (a link itself, never what it points to); False if absent."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
    else:
        return False
    return True
