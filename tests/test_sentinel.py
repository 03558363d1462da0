"""The sentinel's rules and what it reads from /proc, with a scripted clock and snapshots; CPU pinning."""

from __future__ import annotations

import os

import pytest

from deploykit.errors import ConfigError
from deploykit.latency.sentinel import Sentinel, SentinelPolicy
from deploykit.measure.processes import busiest, own_tree, parse_stat, process_snapshot
from deploykit.runtimes import hostinfo

TICKS = os.sysconf("SC_CLK_TCK")


def one_shot(**policy) -> SentinelPolicy:
    """A policy that acts on single measurements: the scripted sequences below are the checks."""
    return SentinelPolicy(start_samples=1, confirm=False, **policy)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_parse_stat_reads_name_parent_and_cpu_time_even_with_spaces_in_the_name():
    line = "4242 (my (odd) worker) S 17 4242 4242 0 -1 4194560 100 0 0 0 350 25 0 0 20 0 3 0 9 0 0\n"
    assert parse_stat(line) == ("my (odd) worker", 17, 375)
    assert parse_stat("garbage") is None


def test_the_process_tree_and_the_busiest_other_processes():
    me = 100
    before = {1: ("init", 0, 0), me: ("python", 1, 0), 101: ("worker", me, 0), 102: ("grandchild", 101, 0),
              200: ("backup", 1, 0), 300: ("compiler", 1, 10), 400: ("idle", 1, 5)}
    after = {1: ("init", 0, 0), me: ("python", 1, 900), 101: ("worker", me, 900),
             102: ("grandchild", 101, 900), 200: ("backup", 1, 3 * TICKS), 300: ("compiler", 1, 10 + TICKS),
             400: ("idle", 1, 5), 500: ("newcomer", 1, 50)}
    assert own_tree(after, me) == {me, 101, 102}
    top = busiest((10.0, before), (14.0, after), exclude_root=me)
    # 3 s of CPU in 4 s, 1 s in 4 s; this tree, idle processes and ones not seen before are left out
    assert top == [{"pid": 200, "name": "backup", "cpu_share": 0.75},
                   {"pid": 300, "name": "compiler", "cpu_share": 0.25}]
    # a pid reused by another program between the snapshots is not compared
    reused = dict(after)
    reused[200] = ("other", 1, 3 * TICKS)
    assert [p["name"] for p in busiest((10.0, before), (14.0, reused), exclude_root=me)] == ["compiler"]


def test_a_real_snapshot_sees_this_process():
    snapshot = process_snapshot()
    assert os.getpid() in snapshot and snapshot[os.getpid()][1] == os.getppid()


def test_the_sentinel_is_due_by_count_or_by_time():
    clock = Clock()
    watch = Sentinel(measure=lambda: 5.0, policy=SentinelPolicy(every=3, interval_s=60.0), clock=clock,
                     snapshot=dict, load=lambda: [0.1, 0.2, 0.3])
    watch.start()
    assert not watch.due()  # nothing measured since
    watch.add((1, "a"))
    watch.add((2, "b"))
    assert not watch.due()
    watch.add((3, "c"))
    assert watch.due()  # three entries
    watch.settle(redo=lambda window: None, describe=lambda window: "")
    assert watch.window == []
    watch.add((4, "d"))
    clock.now = 59.9
    assert not watch.due()
    clock.now = 60.0
    assert watch.due()  # sixty seconds since the last sentinel
    only_ends = Sentinel(measure=lambda: 5.0, policy=SentinelPolicy(every=0, interval_s=1e9), clock=clock,
                         snapshot=dict)
    only_ends.start()
    for number in range(100):
        only_ends.add((number, None))
    assert not only_ends.due()


def test_settle_redoes_the_window_until_steady_within_the_bound():
    values = iter([10.0, 11.0, 10.6, 10.2])  # start; +10 %, +6 %: drifts; +2 %: steady
    redone: list[list] = []
    said: list[str] = []
    watch = Sentinel(measure=lambda: next(values), policy=one_shot(every=2, retries=3), say=said.append,
                     clock=Clock(), snapshot=dict, load=lambda: [2.5, 1.0, 0.5])
    watch.start()
    watch.add((1, "a"))
    watch.add((2, "b"))
    watch.settle(redo=lambda window: redone.append(list(window)), describe=lambda window: "1-2")
    assert redone == [[(1, "a"), (2, "b")]] * 2
    record = watch.record()
    assert [c["ms"] for c in record["checks"]] == [10.0, 11.0, 10.6, 10.2]
    assert [round(d["drift"], 6) for d in record["drifts"]] == [0.1, 0.06]
    assert all(d["action"] == "measured again" and d["load"] == [2.5, 1.0, 0.5] for d in record["drifts"])
    assert len(said) == 2 and "+10.0% from 10.000 ms" in said[0] and "load 2.50/1.00/0.50" in said[0]


def test_a_level_that_persists_through_the_retries_rebases_once_and_redoes_every_earlier_entry():
    # start 10 (taken in a burst of load); the machine is at 8 from then on: the first window drifts
    # (-20 %), is measured again twice at 8, and 8 persists: rebase to 8, redo the start's own entry
    # (the model row); later windows at 8 are steady against the new start
    values = iter([10.0, 8.0, 8.1, 8.0, 8.05])
    redone: list[list] = []
    said: list[str] = []
    watch = Sentinel(measure=lambda: next(values), policy=one_shot(every=2, retries=2), say=said.append,
                     clock=Clock(), snapshot=dict, load=lambda: None)
    watch.start(item=(14, "model"))
    watch.add((1, "a"))
    watch.add((2, "b"))
    watch.settle(redo=lambda items: redone.append(list(items)),
                 describe=lambda items: ",".join(str(n) for n, _ in items))
    assert redone == [[(1, "a"), (2, "b")], [(1, "a"), (2, "b")], [(14, "model")]]
    assert watch.start_ms == 8.0 and watch.rebased
    assert [d["action"] for d in watch.record()["drifts"]] == [
        "measured again", "measured again", "rebased: the earlier entries (14) measured again"]
    assert "new start value" in said[-1]
    watch.add((3, "c"))
    watch.settle(redo=lambda items: redone.append(list(items)), describe=lambda items: "3")
    assert len(redone) == 3 and watch.history == [(14, "model"), (1, "a"), (2, "b"), (3, "c")]
    # a second persisting level is only kept and warned about: one rebase per profile
    again = Sentinel(measure=iter([10.0, 8.0, 8.0, 8.0, 6.0, 6.0, 6.0]).__next__,
                     policy=one_shot(every=1, retries=2), clock=Clock(), snapshot=dict,
                     load=lambda: None)
    again.start()
    for item in ((1, "a"), (2, "b")):
        again.add(item)
        again.settle(redo=lambda items: None, describe=lambda items: "")
    assert again.start_ms == 8.0 and again.record()["drifts"][-1]["action"] == "kept (retries exhausted)"


def test_one_slow_process_neither_sets_the_start_nor_makes_a_drift():
    # the model row came from a slow process (15 ms); two more start measurements at 10: the start is 10.
    # A check at 15 (one slow process) is measured once more at 10.2: no drift, nothing redone. A check
    # at 12 confirmed at 12.1 is a drift: the window is redone, then steady at 10.1.
    values = iter([10.0, 10.0, 15.0, 10.2, 12.0, 12.1, 10.1])
    redone: list[list] = []
    watch = Sentinel(measure=lambda: next(values), policy=SentinelPolicy(every=1, retries=2), clock=Clock(),
                     snapshot=dict, load=lambda: None)
    assert watch.start(15.0, item=(9, "model")) == 10.0
    watch.add((1, "a"))
    watch.settle(redo=lambda items: redone.append(list(items)), describe=lambda items: "1")
    assert redone == [] and watch.record()["drifts"] == []
    watch.add((2, "b"))
    watch.settle(redo=lambda items: redone.append(list(items)), describe=lambda items: "2")
    assert redone == [[(2, "b")]]
    checks = watch.record()["checks"]
    assert [c["kind"] for c in checks] == ["start"] * 3 + ["check", "confirm", "check", "confirm", "check"]
    assert [round(d["drift"], 6) for d in watch.record()["drifts"]] == [0.2]  # the closer of 12 and 12.1


def test_sentinel_policy_validation():
    assert SentinelPolicy().as_dict() == {"every": 8, "interval_s": 60.0, "max_drift": 0.05, "retries": 2,
                                          "rebase": True, "start_samples": 3, "confirm": True}
    for bad in (dict(every=-1), dict(every=1.5), dict(max_drift=0.0), dict(retries=True), dict(rebase=1),
                dict(start_samples=0), dict(start_samples=2.0), dict(confirm="yes")):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            SentinelPolicy(**bad)


def test_pinned_cores_take_one_cpu_per_physical_core_first(monkeypatch):
    # four logical CPUs, two cores with two hyper-threads each: (0, 1) and (2, 3)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(hostinfo, "_core_of", lambda cpu: ("0", str(cpu // 2)))
    assert hostinfo.pinned_cores(None) == (0, 2)  # the runtime's default: one thread per core
    assert hostinfo.pinned_cores(1) == (0,)
    assert hostinfo.pinned_cores(2) == (0, 2)
    assert hostinfo.pinned_cores(3) == (0, 1, 2)  # a sibling only once every core has a thread
    assert hostinfo.pinned_cores(16) == (0, 1, 2, 3)
    monkeypatch.delattr(os, "sched_getaffinity")
    assert hostinfo.pinned_cores(2) is None  # no affinity API (macOS, Windows)


# the probe rows of two demo profiles (2026-12-06): the chosen settings' eight fresh processes, ms
NOISY = [0.781, 1.070, 0.911, 1.195, 1.249, 1.236, 1.306, 1.273]    # none repeatable: the steadiest
STEADY = [0.440, 0.426, 0.433, 0.422, 0.437, 0.423, 0.422, 0.419]   # 100 % within ±5 %


def probe_record(chosen_medians, other_medians=(1.0, 1.0, 1.0)) -> dict:
    chosen, other = {"threads": 2, "spinning": False}, {"threads": 1}
    return {"chosen": chosen, "rows": [{"settings": other, "medians_ms": list(other_medians)},
                                       {"settings": chosen, "medians_ms": list(chosen_medians)}]}


def test_the_drift_limit_is_no_tighter_than_the_chosen_settings_own_process_noise():
    from deploykit.latency.probe import chosen_robust_cv
    from deploykit.latency.sentinel import for_process_noise

    noise = chosen_robust_cv(probe_record(NOISY))
    # median 1.2155; |m / median − 1| sorted: .0169 .0169 .0276 .0473 .0745 .1197 .2505 .3575 → MAD .0609
    assert noise == pytest.approx(1.4826 * (0.047306 + 0.074455) / 2, rel=1e-4)
    widened = for_process_noise(SentinelPolicy(), noise)
    assert widened.max_drift == pytest.approx(2 * noise, abs=1e-4) and 0.17 < widened.max_drift < 0.19
    assert widened.retries == SentinelPolicy().retries  # only the limit moves
    # the −11 … −17 % checks of that profile were noise, not drift; a steady setting keeps ±5 %
    steady = chosen_robust_cv(probe_record(STEADY))
    assert steady < 0.025 and for_process_noise(SentinelPolicy(), steady) == SentinelPolicy()
    assert for_process_noise(SentinelPolicy(max_drift=0.3), noise).max_drift == 0.3  # never narrowed
    for record in (None, {}, probe_record([1.0, 1.1]), probe_record([0, 0, 0]), {"rows": "x", "chosen": 1},
                   {"rows": [{"settings": 1, "medians_ms": ["a"]}], "chosen": 1}):  # none, too few, malformed
        assert chosen_robust_cv(record) is None
    assert for_process_noise(SentinelPolicy(), None) == SentinelPolicy()
