"""The :class:`Pipeline`: the stages of ``deploykit run`` in order, each skipped when its artifact is
there (the package docstring lists them)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deploykit.clock import utc_now
from deploykit.errors import ConfigError, MergeError
from deploykit.fileio import atomic_path, check_writable_dir, read_json, write_json_atomic
from deploykit.pipeline.config import PipelineConfig, default_run_dir, unnamed_agent_error
from deploykit.pipeline.rundir import (
    OUTPUTS_KEY,
    RUN_FILE,
    RunLayout,
    Stage,
    earlier_outputs,
    read_state,
    remove_entry,
)
from deploykit.progress import Progress, silent
from deploykit.targets import load_target

if TYPE_CHECKING:
    from deploykit.measure.host import MeasureHost

EXHAUSTIVE_PROXY_BITS = 9     # evaluate every subnet on data up to 2^9 of them; evolve beyond
SEARCH_POPULATION, SEARCH_GENERATIONS = 12, 6   # ≤ ~85 evaluations per budget, shared through a cache


@dataclass(frozen=True)
class PipelineResult:
    """What one ``deploykit run`` invocation did; ``seconds``: each stage's time, over all invocations."""

    root: Path
    ran: tuple[str, ...]
    skipped: tuple[str, ...]
    seconds: dict[str, float]
    wall_s: float
    outputs: tuple[Path, ...]
    notes: tuple[str, ...] = ()   # e.g. which target's budget binds each subnet (several targets)

    def summary(self) -> str:
        table = self.root / "table.md"
        lines = [f"deploykit run: {len(self.ran)} stage(s) ran, {len(self.skipped)} were done already; "
                 f"{self.wall_s:.1f} s now, {sum(self.seconds.values()):.1f} s of stages in all "
                 f"({self.root})"]
        if table.is_file():
            lines += ["", table.read_text().rstrip(), ""]
        lines += list(self.notes)
        lines += [f"wrote {path}" for path in self.outputs if path.is_file()]
        return "\n".join(lines)


# --- the pipeline ----------------------------------------------------------------------------------

class Pipeline:
    """The stages of one run (see the module docstring). ``run()`` executes the ones not yet done."""

    def __init__(self, config: PipelineConfig, out: str | Path | None = None, *, fresh: bool = False,
                 progress: Progress | None = None,
                 host: MeasureHost | Mapping[str, MeasureHost] | None = None):
        from deploykit.latency.profile import default_table_path
        from deploykit.runtimes import check_target

        self.config = config
        self.say = progress or silent
        self.targets = [load_target(name) for name in config.targets]
        for target in self.targets:
            check_target(target)
        self.hosts = self._hosts_by_target(host)
        self.target = self.targets[0]
        self.batch = config.latency_batch or self._common_batch()
        root = Path(out) if out is not None else default_run_dir(config)
        table_name = default_table_path(config.model, self.target.name, config.input_size, self.batch).name
        self.layout = RunLayout(root=root, config=config, target_name=self.target.name, table_name=table_name)
        self.fresh = fresh
        self._cache: dict[str, Any] = {}

    def _hosts_by_target(self, host) -> dict[str, MeasureHost]:
        """Where each target is measured: ``host`` for every target (this machine when None; an agent
        for a run of one target only), or a mapping target name → host (unnamed targets: here)."""
        from deploykit.measure.host import host_or_local

        if not isinstance(host, Mapping):
            if host is not None and host.url is not None and len(self.targets) > 1:
                raise unnamed_agent_error(self.config, host.url)
            return {target.name: host_or_local(host) for target in self.targets}
        unknown = sorted(set(host) - {target.name for target in self.targets})
        if unknown:
            raise ConfigError(f"hosts for {', '.join(unknown)}, not a target of this run "
                              f"({self.config.target})")
        return {target.name: host_or_local(host.get(target.name)) for target in self.targets}

    def host_for(self, target) -> MeasureHost:
        """Where ``target`` (a Target or its name) is measured."""
        return self.hosts[getattr(target, "name", target)]

    # -- orchestration --

    @property
    def several(self) -> bool:
        return len(self.targets) > 1

    def _common_batch(self) -> int:
        """The targets' batch: one export serves every target, so they must agree (or --batch decides)."""
        batches = {target.name: target.batch for target in self.targets}
        if len(set(batches.values())) > 1:
            shown = ", ".join(f"{name} {batch}" for name, batch in batches.items())
            raise ConfigError(f"the targets' batch sizes differ ({shown}); one exported model serves "
                              "them all: give --batch B")
        return self.target.batch

    def _per_target(self, name: str, target: str) -> str:
        """A stage's name: as it always was for one target, ``NAME on TARGET`` for each of several."""
        return f"{name} on {target}" if self.several else name

    def stages(self) -> list[Stage]:
        lay = self.layout
        stages = [Stage("baseline", lambda: _exists(lay.weights, lay.baseline / "result.json"),
                        self._baseline, lay.weights)]
        for target in self.targets:
            name = target.name
            stages.append(Stage(self._per_target("profile", name), lambda n=name: self._table_complete(n),
                                self._adopt_table if self.config.table is not None
                                else lambda n=name: self._profile(n), lay.table_of(name)))
        stages += [
            Stage("budgets", lambda: False, self._check_budgets),
            Stage("supernet", lambda: _exists(lay.supernet), self._supernet, lay.supernet),
            Stage("export original", lambda: _exists(lay.onnx(lay.baseline)),
                  lambda: self._export(self.original_module, lay.baseline), lay.onnx(lay.baseline)),
            *self._verify_stages("verify original", lay.baseline, pruned=(), reference=None),
        ]
        for text in self._budgets_tightest_first():
            stages += self._budget_stages(text)
        stages += self._continued_stages()
        stages.append(Stage("table", lambda: False, self._table, lay.root / "table.md",
                            also=(lay.root / "table.csv", lay.root / "pareto.png")))
        return stages

    def _budgets_tightest_first(self) -> list[str]:
        """The budgets in the order their stages run: tightest first where they share a unit (the
        fractions of a demo), so that each looser budget's search starts from the tighter budgets'
        choices and never settles on a subnet that scores below one of them."""
        from deploykit.search.budget import parse_budget

        budgets = list(self.config.budgets)
        if len({parse_budget(text).unit for text in budgets}) > 1:
            return budgets
        return sorted(budgets, key=lambda text: parse_budget(text).value)

    def _verify_stages(self, name: str, folder: Path, *, pruned: tuple[int, ...] | None,
                       reference: Path | None) -> list[Stage]:
        """One verify stage per target (each with its own table and run settings)."""
        stages = []
        for target in self.targets:
            report = self.layout.report(folder, target.name)
            stages.append(Stage(self._per_target(name, target.name), lambda r=report: _verified(r),
                                lambda t=target: self._verify(folder, t, pruned=pruned, reference=reference),
                                report))
        return stages

    def _continued_stages(self) -> list[Stage]:
        folder = self.layout.continued
        weights, onnx = folder / "model.pt", self.layout.onnx(folder)
        return [
            Stage("continue original", lambda: _exists(weights, folder / "result.json"),
                  self._continue_original, weights),
            Stage("export continued", lambda: _exists(onnx),
                  lambda: self._export(lambda: self.original_module(folder), folder), onnx),
            *self._verify_stages("verify continued", folder, pruned=(), reference=None),
        ]

    def _budget_stages(self, text: str) -> list[Stage]:
        lay, folder = self.layout, self.layout.budget(text)
        subnet, merged, onnx = folder / "subnet.json", folder / "merged.safetensors", lay.onnx(folder)
        return [
            Stage(f"search {text}", lambda: _exists(subnet), lambda: self._search(text, folder), subnet),
            Stage(f"train {text}", lambda: _exists(merged, folder / "result.json"),
                  lambda: self._train_subnet(folder), merged),
            Stage(f"export {text}", lambda: _exists(onnx),
                  lambda: self._export(lambda: _merged_module(folder), folder), onnx),
            *self._verify_stages(f"verify {text}", folder, pruned=None, reference=lay.onnx(lay.baseline)),
        ]

    def run(self) -> PipelineResult:
        """Run every stage that is not done yet; return what ran, what was skipped and the timings."""
        started = time.perf_counter()
        self.validate()
        state = self._open_run_dir()
        stages = self.stages()
        ran, skipped = [], []
        width = len(str(len(stages)))
        for number, stage in enumerate(stages, 1):
            head = f"[{number:>{width}}/{len(stages)}] {stage.name}"
            if stage.is_done():
                self.say(f"{head}: done already ({stage.artifact})")
                skipped.append(stage.name)
                continue
            self.say(f"{head} …")
            self._claim(state, stage.writes(self.layout.root))
            began = time.perf_counter()
            summary = stage.run()
            seconds = time.perf_counter() - began
            state["stages"][stage.name] = {"seconds": round(seconds, 3), "finished": utc_now()}
            write_json_atomic(self.layout.root / RUN_FILE, state)
            self.say(f"{head}: {summary} [{seconds:.1f} s]")
            ran.append(stage.name)
        seconds = {name: entry["seconds"] for name, entry in state["stages"].items()}
        lay = self.layout
        outputs = (lay.root / "table.md", lay.root / "table.csv", lay.root / "pareto.png")
        return PipelineResult(root=lay.root, ran=tuple(ran), skipped=tuple(skipped), seconds=seconds,
                              wall_s=time.perf_counter() - started, outputs=outputs,
                              notes=tuple(self.binding_lines()))

    def binding_lines(self) -> list[str]:
        """For a run of several targets: which target's budget binds each chosen subnet (subnet.json)."""
        from deploykit.search.joint import BudgetCheck, binding_line
        from deploykit.subnet import Subnet

        if not self.several:
            return []
        lines = []
        for text in self.config.budgets:
            path = self.layout.budget(text) / "subnet.json"
            if path.is_file() and Subnet.read(path).budgets:
                checks = [BudgetCheck(**check) for check in Subnet.read(path).budgets]
                lines.append(f"budget {text}: {binding_line(checks)}")
        return lines

    def validate(self) -> None:
        """Check everything that can be checked before the run directory is touched, so that a
        refused run writes (or, with --fresh, deletes) nothing: the model, the target, the data and
        the batch size, --weights (readable, and fitting the model and the data's classes), and that
        the run directory can be written."""
        from deploykit.models import require_known_model

        require_known_model(self.config.model)
        for target in self.targets:
            self._require_target(target)
        if self.config.table is not None:
            self._given_table()  # a table for another model or setup: refused before anything is written
        check_writable_dir(self.layout.root)
        num_classes = self._check_data()
        if self.config.weights is not None:
            self._check_weights(num_classes)

    def _check_data(self) -> int:
        from deploykit.data import load_datasets, train_loader

        datasets = load_datasets(self.data_config())
        train_loader(datasets.train, batch_size=self.config.batch_size, seed=self.config.seed)
        return datasets.num_classes

    def _check_weights(self, num_classes: int) -> None:
        from deploykit.models import create_model
        from deploykit.training import load_model_weights

        module = create_model(self.config.model, num_classes=num_classes, input_size=self.config.input_size)
        load_model_weights(module, self.config.weights, new_head=False)

    def _require_target(self, target) -> None:
        """The profile and verify stages measure on the target: it must be available where they measure
        (here, or on the device agent); the error says what is missing."""
        host = self.host_for(target)
        ok, reason = host.availability(target)
        if ok:
            return
        name = target.name
        if host.url is not None:
            stages = "verify stages measure" if self.config.table else "profile and verify stages measure"
            raise ConfigError(f"the {stages} on {host.describe()}, which cannot run target {name} "
                              f"({reason}): serve it on the {target.device} machine (deploykit serve "
                              f"--targets {name}) or give the --device URL of an agent that does")
        if self.config.table is not None:
            raise ConfigError(f"--table gives the latency table, but the verify stages measure on target "
                              f"{name}, which cannot run here ({reason}): give --device URL of a device "
                              f"agent (`deploykit serve` on the {target.device} machine)")
        if self.several:
            raise ConfigError(f"target {name} (of {self.config.target}) cannot run here: {reason}. Give "
                              f"--device {name}=URL of a device agent (`deploykit serve` on the "
                              f"{target.device} machine); the targets not named are measured here")
        raise ConfigError(f"target {name} cannot run here: {reason}. `deploykit run` profiles and verifies "
                          "on the target: run it on that machine, or give --device URL of a device agent "
                          "(`deploykit serve`) there; --table TABLE uses a table measured there instead of "
                          "profiling (verify still needs --device)")

    def _open_run_dir(self) -> dict[str, Any]:
        """Start the run directory, or reopen it after checking that its settings are these."""
        root, path = self.layout.root, self.layout.root / RUN_FILE
        cleared = False
        if self.fresh and path.is_file():
            self._remove_earlier_run()
            cleared = True
        elif self.fresh and root.exists() and any(root.iterdir()):
            raise ConfigError(f"--fresh would delete {root}, which is not a deploykit run directory "
                              f"(no {RUN_FILE}); choose another --out")
        if path.is_file():
            state = read_state(path)
            if not isinstance(state.get(OUTPUTS_KEY), list):  # a run from before the manifest: adopt
                state[OUTPUTS_KEY] = [name for name in earlier_outputs(path, self.layout)
                                      if (root / name).exists()]
            before = PipelineConfig.from_dict(state["config"], source=str(path))
            changed = self.config.differences(before)
            if changed:
                raise ConfigError(f"{root} holds a run with other settings ({'; '.join(changed)}); "
                                  "choose another --out, or pass --fresh to start it over")
            added = [b for b in self.config.budgets if b not in before.budgets]
            if added:
                self.say(f"resuming {root}; new budget(s): {', '.join(added)}")
            else:
                self.say(f"resuming {root}")
            state["config"] = self.config.as_dict()
        else:
            if not cleared and root.exists() and any(root.iterdir()):
                raise ConfigError(f"{root} exists and is not a deploykit run directory (no {RUN_FILE}); "
                                  "choose another --out")
            state = {"deploykit_run": 1, "started": utc_now(), "config": self.config.as_dict(), "stages": {},
                     OUTPUTS_KEY: []}
            self.say(f"run directory {root}")
        from deploykit import __version__

        state["deploykit_version"] = __version__
        write_json_atomic(path, state)
        return state

    # -- the manifest: what --fresh may delete --

    def _claim(self, state: dict[str, Any], names: list[str]) -> None:
        """Record in run.json, before a stage writes, the entries it is about to create. An entry that
        exists already and is not the run's (a user's file of that name) is never claimed."""
        owned = state.setdefault(OUTPUTS_KEY, [])
        new = [name for name in dict.fromkeys(names)
               if name not in owned and not (self.layout.root / name).exists()]
        if new:
            owned.extend(new)
            write_json_atomic(self.layout.root / RUN_FILE, state)

    def _remove_earlier_run(self) -> None:
        """--fresh: delete what the earlier run wrote (its manifest in run.json) and run.json; a
        user's other files in the folder stay. A run.json from before the manifest (or one that
        cannot be read) stands for the entries its settings (or these) make deploykit write."""
        root = self.layout.root
        names = earlier_outputs(root / RUN_FILE, self.layout)
        removed = [name for name in names if remove_entry(root / name)]
        (root / RUN_FILE).unlink(missing_ok=True)
        kept = sorted(entry.name for entry in root.iterdir())
        self.say(f"--fresh: removed the earlier run's {', '.join(removed) or 'nothing'} and {RUN_FILE} "
                 f"in {root}" + (f"; kept {len(kept)} other entr{'y' if len(kept) == 1 else 'ies'}"
                                 if kept else ""))

    # -- shared inputs, built once --

    def data_config(self):
        from deploykit.data import DataConfig

        c = self.config
        return DataConfig(name=c.data, input_size=c.input_size, train_limit=c.train_limit,
                          val_limit=c.val_limit, strict_images=c.strict_images)

    def run_config(self, out: Path, epochs: int):
        from deploykit.training import RunConfig

        c = self.config
        return RunConfig(out=out, epochs=epochs, batch_size=c.batch_size, seed=c.seed, device=c.device,
                         threads=c.train_threads, resume=(out / "checkpoint.pt").is_file())

    def latency_table(self, target: str | None = None):
        """The run's table (of ``target``, default the first), ready for the machine the run measures on
        (this one, or the device agent's): a table from another machine says what differs, and its
        millisecond budgets need the table re-anchored for the measuring machine."""
        from deploykit.latency.identity import open_table
        from deploykit.search.budget import parse_budget

        name = target or self.target.name
        key = f"table {name}"
        if key not in self._cache:
            units = {parse_budget(text).unit for text in self.config.budgets}
            self._cache[key] = open_table(
                self.layout.table_of(name),
                budget_unit="ms" if "ms" in units else "fraction",
                say=lambda line: self.say(f"  {line}"), host=self.host_for(name))
        return self._cache[key]

    def latency_tables(self) -> list:
        """Every target's table, in the order of --target."""
        return [self.latency_table(target.name) for target in self.targets]

    def candidates(self) -> tuple[int, ...]:
        """The blocks worth pruning: those whose merged form some target's table says is faster than the
        original (with several targets, the joint search weighs a block faster on one, slower on another)."""
        from deploykit.search import LatencySpace

        if "candidates" in self._cache:
            return self._cache["candidates"]
        faster: set[int] = set()
        for table in self.latency_tables():
            space = LatencySpace.from_table(table)
            faster |= {c for c, saving in zip(space.candidates, space.savings) if saving > 0}
        if not faster:
            where = (f"{self.target.name} according to {self.layout.table}" if not self.several
                     else f"any of {self.config.target} according to their tables")
            raise ConfigError(f"no block of {self.config.model} is faster merged than original on {where}: "
                              "depth pruning cannot make this model faster on this target")
        self._cache["candidates"] = tuple(sorted(faster))
        return self._cache["candidates"]

    def original_module(self, folder: Path | None = None):
        """The unpruned model whose model.pt and result.json are in ``folder`` (default: the original)."""
        from deploykit.models import create_model
        from deploykit.training import load_model_weights

        folder = folder or self.layout.baseline
        result = read_json(folder / "result.json", what="result")
        module = create_model(self.config.model, num_classes=int(result["num_classes"]),
                              input_size=self.config.input_size)
        load_model_weights(module, folder / "model.pt")
        return module.eval()

    # -- the stages --

    def _baseline(self) -> str:
        from deploykit.training import evaluate_original, train_baseline

        c, out = self.config, self.layout.baseline
        if c.weights is not None:
            result = evaluate_original(c.model, data=self.data_config(), weights=c.weights, out=out)
            return f"original from {c.weights}: top-1 {result.top1:.2f}%"
        result = train_baseline(c.model, data=self.data_config(), run=self.run_config(out, c.baseline_epochs))
        return f"trained {c.baseline_epochs} epoch(s): top-1 {result.top1:.2f}%"

    def _continue_original(self) -> str:
        from deploykit.training import DistillConfig, train_baseline
        from deploykit.training.config import stage_optim

        c = self.config
        result = train_baseline(c.model, data=self.data_config(),
                                run=self.run_config(self.layout.continued, c.subnet_epochs),
                                optim=stage_optim("subnet"),  # the pruned variants' recipe (module docstring)
                                weights=self.layout.weights, distill=DistillConfig())
        return (f"{c.subnet_epochs} more epoch(s), unpruned, distilled from the original: "
                f"top-1 {result.top1:.2f}%")

    def _table_complete(self, target: str) -> bool:
        from deploykit.latency.table import read_meta

        path = self.layout.table_of(target)
        return path.is_file() and read_meta(path).complete

    def _target(self, name: str):
        return next(target for target in self.targets if target.name == name)

    def _profile(self, target: str) -> str:
        from deploykit.latency.profile import profile

        result = profile(self.config.model, self._target(target), input_size=self.config.input_size,
                         batch=self.batch, out=self.layout.table_of(target), protocol=self.config.protocol,
                         model=self.original_module(), end_to_end=self.config.end_to_end,
                         host=self.host_for(target), progress=lambda line: self.say(f"  {line}"))
        self._cache.pop(f"table {target}", None)
        self._cache.pop("candidates", None)
        whole = result.table.model_latency()
        shown = f", whole model {whole:.3f} ms" if whole is not None else ""
        return f"{result.entries} entries{shown}: {result.path}; {result.table.fidelity_line()}"

    def _given_table(self):
        """The ``--table`` table, checked: complete, and made for this run's model, input size, batch
        and target (a TableError naming what differs)."""
        from deploykit.latency.table import LatencyTable

        table = LatencyTable.read(self.config.table)
        table.check_coverage()
        meta, c = table.meta, self.config
        if meta.model != c.model:
            raise ConfigError(f"--table {table.path} is for model {meta.model}, this run's is {c.model}")
        table.check_matches(target=self.target, batch=self.batch, input_size=c.input_size)
        return table

    def _adopt_table(self) -> str:
        """Copy the ``--table`` table (and its end-to-end points) into the run, byte for byte; the CSV
        last, so that the stage counts as done only once everything is there."""
        from deploykit.fileio import write_bytes_atomic
        from deploykit.latency.endtoend import points_path
        from deploykit.latency.table import meta_path

        table, target = self._given_table(), self.layout.table
        write_bytes_atomic(meta_path(target), meta_path(table.path).read_bytes())
        if points_path(table.path).is_file():
            write_bytes_atomic(points_path(target), points_path(table.path).read_bytes())
        write_bytes_atomic(target, table.path.read_bytes())
        self._cache.pop(f"table {self.target.name}", None)
        self._cache.pop("candidates", None)
        where = f" through {table.meta.device_url}" if table.meta.device_url else ""
        return (f"copied {table.path} ({table.meta.mode} on {table.meta.device_string}{where}, "
                f"{table.meta.date}) to {target}; {table.fidelity_line()}")

    def _check_budgets(self) -> str:
        if not self.several:
            return self._check_target_budgets(self.target.name)[0]
        lines, per_target = [], []
        for target in self.targets:
            line, budgets_ms = self._check_target_budgets(target.name)
            lines.append(f"{target.name}: {line}")
            per_target.append(budgets_ms)
        self._check_joint_budgets(per_target)
        return "; ".join(lines) + "; every budget is met on every target together by some subnet"

    def _check_target_budgets(self, target: str) -> tuple[str, list[float]]:
        """Each budget on ``target``'s table, in ms, reachable and below the unpruned prediction."""
        from deploykit.search import LatencySpace
        from deploykit.search.budget import parse_budget
        from deploykit.search.engine import reachable_budget_ms

        table = self.latency_table(target)
        space = LatencySpace.from_table(table, self.candidates())
        where = f" on {target}" if self.several else ""
        shown, budgets_ms = [], []
        for text in self.config.budgets:
            try:
                ms = reachable_budget_ms(table, space, parse_budget(text))
            except ConfigError as error:
                raise ConfigError(f"budget {text}{where}: {error}") from None
            if ms >= space.full_ms:
                raise ConfigError(f"budget {text}{where} = {ms:.3f} ms is not below the unpruned model's "
                                  f"predicted {space.full_ms:.3f} ms: nothing needs pruning")
            shown.append(f"{text} → {ms:.3f} ms")
            budgets_ms.append(ms)
        faster = [c for c, saving in zip(space.candidates, space.savings) if saving > 0]
        return (f"unpruned {space.full_ms:.3f} ms, reachable down to {space.min_ms():.3f} ms; "
                + ", ".join(shown) + f"; {len(faster)} blocks faster merged: {faster}"), budgets_ms

    def _check_joint_budgets(self, per_target: list[list[float]]) -> None:
        """Every budget must be met on all targets at once by one subnet (before any training)."""
        import numpy as np

        from deploykit.search import DepthProxy, JointSearcher
        from deploykit.search.engine import BUDGET_SLACK

        searcher = JointSearcher(self.latency_tables(), DepthProxy(), candidates=self.candidates())
        for index, text in enumerate(self.config.budgets):
            budgets_ms = [target_ms[index] for target_ms in per_target]
            if searcher.fastest(np.asarray(budgets_ms) * (1 + BUDGET_SLACK)) is None:
                raise ConfigError(f"budget {text}: {searcher.infeasible_message(budgets_ms)} "
                                  f"(tables in the order of --target {self.config.target})")

    def _supernet(self) -> str:
        from deploykit.training import SupernetConfig, train_supernet

        c = self.config
        result = train_supernet(c.model, weights=self.layout.weights, data=self.data_config(),
                                run=self.run_config(self.layout.supernet.parent, c.supernet_epochs),
                                config=SupernetConfig(candidates=self.candidates()))
        return f"top-1 {result.top1:.2f}% unpruned, {result.top1_probe:.2f}% with probe {list(result.probe)}"

    def _proxy(self):
        from deploykit.search import make_proxy
        from deploykit.training import ProxyData

        if "proxy" not in self._cache:
            c = self.config
            data = ProxyData(c.data, val_limit=c.proxy_val_limit, input_size=c.input_size)
            self._cache["proxy"] = make_proxy(f"supernet:{self.layout.supernet}", table=self.latency_table(),
                                              data=data, progress=lambda line: self.say(f"  {line}"))
        return self._cache["proxy"]

    def _search(self, text: str, folder: Path) -> str:
        from deploykit.search import search
        from deploykit.search.budget import parse_budget

        candidates = self.candidates()
        strategy = "auto" if len(candidates) <= EXHAUSTIVE_PROXY_BITS else "evolutionary"
        options = dict(candidates=candidates, strategy=strategy, seed=self.config.seed,
                       population=SEARCH_POPULATION, generations=SEARCH_GENERATIONS,
                       progress=lambda line: self.say(f"  {line}"),
                       starts=list(self._other_choices(folder).values()))
        if self.several:
            return self._joint_search(text, folder, options)
        result = search(self.latency_table(), parse_budget(text), self._proxy(), **options)
        result.subnet.write(folder / "subnet.json")
        proxy = result.subnet.proxy or {}
        return (f"prune {list(result.subnet.pruned)}: predicted {result.predicted_ms:.3f} ms "
                f"({result.speedup:.2f}×), supernet {proxy.get('metric')} {proxy.get('value')}")

    def _other_choices(self, folder: Path) -> dict[Path, tuple[int, ...]]:
        """The blocks the other budgets' searches chose so far, by budget folder: a search starts from
        those that fit its budget as well, a training reuses one of the same blocks."""
        from deploykit.subnet import Subnet

        paths = [self.layout.budget(text) / "subnet.json" for text in self.config.budgets]
        return {path.parent: Subnet.read(path).pruned for path in paths
                if path.parent != folder and path.is_file()}

    def _joint_search(self, text: str, folder: Path, options: dict[str, Any]) -> str:
        """The best subnet within ``text`` on every target's table at once; which budget binds."""
        from deploykit.search import joint_search
        from deploykit.search.budget import parse_budget
        from deploykit.search.joint import binding_line

        tables = self.latency_tables()
        result = joint_search(tables, [parse_budget(text)] * len(tables), self._proxy(), **options)
        result.subnet.write(folder / "subnet.json")
        proxy = result.subnet.proxy or {}
        predicted = ", ".join(f"{check.target} {check.predicted_ms:.3f} ms "
                              f"({check.unpruned_ms / check.predicted_ms:.2f}×)" for check in result.checks)
        return (f"prune {list(result.subnet.pruned)}: predicted {predicted}; supernet {proxy.get('metric')} "
                f"{proxy.get('value')}; {binding_line(result.checks)}")

    def _train_subnet(self, folder: Path) -> str:
        from deploykit.subnet import Subnet
        from deploykit.training import SubnetConfig, train_subnet

        c = self.config
        subnet = Subnet.read(folder / "subnet.json")
        trained = self._trained_alike(folder, subnet.pruned)
        if trained is not None:
            return self._reuse_training(trained, folder)
        result = train_subnet(subnet, weights=self.layout.weights,
                              data=self.data_config(), run=self.run_config(folder, c.subnet_epochs),
                              config=SubnetConfig(method=c.method))
        return (f"{c.method}: top-1 {result.top1_merged:.2f}% merged "
                f"(logit error {result.merge_rel_error:.1e})")

    def _trained_alike(self, folder: Path, pruned: tuple[int, ...]) -> Path | None:
        """Another budget's folder whose search chose the same blocks and whose training is done.

        Every budget trains its subnet with the same recipe, seed and data, so a second budget that
        lands on the same blocks would train the same weights again (half a minute in the demo)."""
        return next((other for other, chosen in self._other_choices(folder).items()
                     if chosen == pruned and _exists(other / "merged.safetensors", other / "result.json")),
                    None)

    def _reuse_training(self, source: Path, folder: Path) -> str:
        """Copy ``source``'s trained subnet into ``folder`` (result.json last: it marks the stage done)."""
        for name in ("merged.safetensors", "log.csv"):
            if (source / name).is_file():
                with atomic_path(folder / name) as tmp:
                    shutil.copyfile(source / name, tmp)
        result = read_json(source / "result.json", what="training result")
        result.update(out=str(folder), merged_path=str(folder / "merged.safetensors"),
                      trained_in=str(source))
        write_json_atomic(folder / "result.json", result)
        return (f"the same blocks as {source.name}: its trained subnet reused, top-1 "
                f"{result.get('top1_merged', float('nan')):.2f}% merged")

    def _export(self, load: Callable[[], Any], folder: Path) -> str:
        from deploykit.deployment import write_settings
        from deploykit.export import export_onnx

        path = export_onnx(load(), (self.batch, 3, *self.config.input_size), self.layout.onnx(folder))
        several = len(self.targets) > 1  # one settings file per target, each from its own table
        written = []
        for target in self.targets:
            table = self.latency_table(target.name)
            deployment = table.meta.deployment(measured_by=str(self.layout.table_of(target.name)))
            settings = write_settings(path, deployment, per_target=several)
            written.append(f"{settings.name} ({table.meta.measured_with().describe()})")
        return f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB) and {', '.join(written)}"

    def _verify(self, folder: Path, target, *, pruned: tuple[int, ...] | None, reference: Path | None) -> str:
        from deploykit.subnet import Subnet
        from deploykit.verify import verify

        path = self.layout.report(folder, target.name)
        if pruned is None:
            twin = self._verified_twin(folder, target.name)
            if twin is not None:
                return self._share_report(twin, folder, path)
            pruned = Subnet.read(folder / "subnet.json").pruned
            module = _merged_module(folder)
        else:
            module = self.original_module(folder)
        report = verify(self.layout.onnx(folder), target=target, protocol=self.config.protocol,
                        reference=reference, torch_module=module, torch_name=str(folder),
                        table=self.latency_table(target.name), pruned=pruned, seed=self.config.seed,
                        rounds=self.config.rounds, host=self.host_for(target),
                        progress=lambda line: self.say(f"  {line}"))
        report.write(path)
        if report.passed is False:
            raise MergeError(f"the exported {self.layout.onnx(folder)} does not reproduce PyTorch on "
                             f"{target.name} (max rel error {report.numerics['max_rel']:.2e} > "
                             f"{report.numerics['tolerance']:g}); see {path}")
        measured = report.latency["model"]["median_ms"]
        speed = f", {report.speedup:.2f}× the original" if report.speedup is not None else ""
        return (f"numerics max rel {report.numerics['max_rel']:.1e}; {measured:.3f} ms measured, "
                f"{report.predicted_ms:.3f} ms predicted{speed}")

    def _verified_twin(self, folder: Path, target: str) -> Path | None:
        """Another budget's passed verify report on ``target`` for the same bytes, exported from the same
        merged weights (budgets that chose one subnet share its training): it applies here as it is."""
        from deploykit.verify import VerifyReport
        from deploykit.verify.files import file_sha256

        onnx_sha, weights_sha = None, None
        for other in (self.layout.budget(text) for text in self.config.budgets):
            report = self.layout.report(other, target)
            if other == folder or not (_verified(report) and _exists(other / "merged.safetensors")):
                continue
            onnx_sha = onnx_sha or file_sha256(self.layout.onnx(folder))  # hashed once, and only if needed
            if VerifyReport.read(report).model_sha256 != onnx_sha:
                continue
            weights_sha = weights_sha or file_sha256(folder / "merged.safetensors")
            if file_sha256(other / "merged.safetensors") == weights_sha:
                return report
        return None

    def _share_report(self, twin: Path, folder: Path, path: Path) -> str:
        from deploykit.verify import VerifyReport

        report = VerifyReport.read(twin)
        note = f"the same file and weights as {twin.parent.name}, verified there ({twin.name})"
        replace(report, model=str(self.layout.onnx(folder)), torch_model=str(folder),
                notes=(*report.notes, note)).write(path)
        measured = report.latency["model"]["median_ms"] if report.latency else None
        figures = f"; {measured:.3f} ms measured there" if measured is not None else ""
        speed = f", {report.speedup:.2f}× the original" if report.speedup is not None else ""
        return (f"{note}: numerics max rel {report.numerics['max_rel']:.1e}{figures}{speed} "
                "(the table stage measures both together)")

    def _table(self) -> str:
        from deploykit.fileio import write_text_atomic
        from deploykit.results_table import render_table, write_speed_accuracy

        root = self.layout.root
        folders = [self.layout.baseline, self.layout.continued] + [self.layout.budget(text)
                                                                   for text in self.config.budgets]
        measured = [self._measure_variants(folders, target) for target in self.targets]
        written = write_speed_accuracy(folders, out=root / "table.md", plot=root / "pareto.png",
                                       measurements=measured)
        csv = write_text_atomic(root / "table.csv", render_table(written.frame, ".csv"))
        return f"wrote {', '.join(map(str, measured))}, {written.table_path}, {csv}, {written.plot_path}"

    def _measure_variants(self, folders: list[Path], target) -> Path:
        """Every variant's ONNX in one round-robin measurement on ``target`` (fresh processes, ``rounds``
        rounds, that target's table's run settings), the original as the reference: the table's
        milliseconds and speed-ups come from it, so they agree."""
        from deploykit.verify.rounds import FILE_PATTERN, measure_models

        lay = self.layout
        files = {folder.name: lay.onnx(folder) for folder in folders}
        path = lay.root / FILE_PATTERN.format(target=target.name)
        if _measured_after(path, files):
            self.say(f"  {path.name}: every model was measured together after its last export: kept")
            return path
        robin = measure_models(files, reference=lay.baseline.name, target=target,
                               protocol=self.config.protocol, rounds=self.config.rounds,
                               table=self.latency_table(target.name), host=self.host_for(target),
                               progress=lambda line: self.say(f"  {line}"))
        return robin.write(path)


# --- helpers ---------------------------------------------------------------------------------------

def _exists(*paths: Path) -> bool:
    return all(p.is_file() for p in paths)


def _measured_after(path: Path, files: dict[str, Path]) -> bool:
    """Whether the round-robin file at ``path`` measured exactly ``files``, after each was written."""
    from deploykit.verify.rounds import RoundRobin

    if not path.is_file():
        return False
    try:
        measured = RoundRobin.read(path)
    except ConfigError:
        return False
    written = path.stat().st_mtime
    return set(measured.models) == set(files) and all(f.stat().st_mtime <= written for f in files.values())


def _merged_module(folder: Path):
    from deploykit.modelfile import load_model

    return load_model(folder / "merged.safetensors")


def _verified(path: Path) -> bool:
    """A verify report that exists and passed (a failed one is redone after the cause is fixed)."""
    from deploykit.verify import VerifyReport

    return path.is_file() and VerifyReport.read(path).passed is True
