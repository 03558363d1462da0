"""The fitted predictor: exact recovery of a planted additive + adjacent-pair structure, ridge shrinkage
toward the isolated prior, pair terms only where they lower the held-out error, serialization, and the
end-to-end plan whose held-out subnets never meet the fit set."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from deploykit.errors import ConfigError, TableError
from deploykit.latency.predictor import RIDGE_GRID, Predictor, Prior, fit_predictor
from deploykit.latency.sampling import plan_end_to_end

GROUPS = ((0, 1), (2,), (3, 4, 5))
TRUE_DELTA = {0: -1.0, 1: -1.0, 2: -2.5, 3: -0.7, 4: -0.7, 5: -0.7}
TRUE_PAIRS = {(0, 1): 0.3, (3, 4): -0.2, (4, 5): -0.2}   # the (g0, g0) and (g2, g2) pair types
BASE = 20.0


def truth(subset) -> float:
    s = set(subset)
    pairs = sum(v for (i, j), v in TRUE_PAIRS.items() if i in s and j in s)
    return BASE + sum(TRUE_DELTA[i] for i in s) + pairs


def prior(offset: float = 0.4) -> Prior:
    """What isolated entries would say: every δ off by ``offset`` ms, the base 15 % high (call overhead)."""
    return Prior(base_ms=BASE * 1.15, delta_ms={i: d + offset for i, d in TRUE_DELTA.items()}, groups=GROUPS)


def points(subsets):
    return [(s, truth(s)) for s in subsets]


def plan(fit_samples=20, holdout=10, seed=0):
    return plan_end_to_end(GROUPS, fit_samples=fit_samples, holdout=holdout, seed=seed)


def test_exact_recovery_of_a_planted_structure_without_noise():
    fitted = fit_predictor(points(plan().fit), prior())
    for k in range(7):
        for subset in itertools.combinations(range(6), k):
            assert fitted.predict(subset) == pytest.approx(truth(subset), abs=1e-9)
    assert fitted.pair_delta_ms == pytest.approx(TRUE_PAIRS, abs=1e-9)  # exactly the planted pair types
    assert fitted.base_ms == pytest.approx(BASE) and fitted.fit["ridge"] == 0.0
    assert fitted.fit["pair_types_kept"] == 2 and fitted.fit["pair_types_tried"] == 4
    assert fitted.fit["loo_rms_pct"] == pytest.approx(0, abs=1e-7)


def test_without_pair_terms_in_the_data_none_is_added():
    flat = [(s, BASE + sum(TRUE_DELTA[i] for i in s)) for s in plan().fit]
    fitted = fit_predictor(flat, prior())
    assert fitted.pair_delta_ms == {} and fitted.fit["pair_types_kept"] == 0


def test_ridge_shrinks_toward_the_isolated_prior():
    chosen = prior()
    few = points(plan(fit_samples=2).fit)
    deviation = []
    for ridge in (0.0, 1e-3, 1e-1, 10.0, 1e8):
        fitted = fit_predictor(few, chosen, ridge=ridge, pairs=False)
        deviation.append(np.linalg.norm([fitted.merged_delta_ms[i] - chosen.delta_ms[i] for i in range(6)]))
        assert fitted.fit["ridge"] == ridge and fitted.fit["ridge_chosen_by"] == "given"
    assert all(a >= b - 1e-12 for a, b in itertools.pairwise(deviation))  # monotone toward the prior
    assert deviation[0] > 0.1 and deviation[-1] < 1e-4
    # where the points say nothing (two points: the unpruned and the all-merged model), δ stays at the prior
    ends = fit_predictor(points([(), tuple(range(6))]), chosen, ridge=0.0, pairs=False)
    moved = np.array([ends.merged_delta_ms[i] - chosen.delta_ms[i] for i in range(6)])
    assert ends.predict(()) == pytest.approx(BASE)
    assert ends.predict(range(6)) == pytest.approx(truth(range(6)))
    # the smallest correction (in group terms) that explains the all-merged point: proportional to group size
    sizes = np.array([2, 2, 1, 3, 3, 3])
    assert moved == pytest.approx(moved[2] * sizes) and (sizes * moved).sum() / 2 < 0


def test_two_points_of_one_group_are_fitted_when_leave_one_out_cannot_choose_a_ridge():
    # a one-group chain measured at its two ends (`--fit-samples 0`), isolated entries whose call overhead
    # makes merging look worth 0.1 ms a block on a model measured at 0.2 ms: every positive ridge leaves
    # each single point fitted exactly, and the largest kept δ at the prior (predicting −0.09 ms merged)
    one_group = Prior(base_ms=1.0, delta_ms={i: -0.1 for i in range(6)}, groups=(tuple(range(6)),))
    fitted = fit_predictor([((), 0.2), (tuple(range(6)), 0.2)], one_group)
    assert fitted.predict(()) == pytest.approx(0.2, rel=1e-3)
    assert fitted.predict(range(6)) == pytest.approx(0.2, rel=1e-3)
    assert fitted.predict((0, 1, 2)) == pytest.approx(0.2, rel=1e-3)
    assert fitted.fit["ridge"] == min(w for w in RIDGE_GRID if w > 0)


def test_noisy_points_choose_a_ridge_by_cross_validation_and_predict_within_noise():
    rng = np.random.default_rng(1)
    noisy = [(s, truth(s) * (1 + rng.normal(0, 0.01))) for s in plan(fit_samples=12).fit]
    fitted = fit_predictor(noisy, prior())
    held = plan(fit_samples=12).holdout
    errors = [abs(fitted.predict(s) / truth(s) - 1) for s in held]
    assert max(errors) < 0.04 and fitted.fit["ridge"] in (0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e4)
    again = fit_predictor(noisy, prior())
    assert again == fitted  # deterministic


def test_predictor_round_trips_and_refuses_malformed_records():
    fitted = fit_predictor(points(plan().fit), prior(), record={"seed": 3})
    assert Predictor.from_dict(fitted.as_dict()) == fitted and fitted.fit["seed"] == 3
    data = fitted.as_dict()
    for broken, message in (({**data, "kind": "magic"}, "kind must be"),
                            ({**data, "extra": 1}, "unknown predictor field"),
                            ({**data, "pair_delta_ms": {"0,2": 0.1}}, "not between two adjacent"),
                            ({**data, "merged_delta_ms": {"0": "x"}}, "malformed"),
                            ({**data, "base_ms": -1.0}, "base_ms must be a positive")):
        with pytest.raises(TableError, match=message):
            Predictor.from_dict(broken)
    with pytest.raises(TableError, match="no term for block"):
        fitted.predict([7])


def test_bad_fit_input_is_refused():
    with pytest.raises(TableError, match="at least two"):
        fit_predictor(points([()]), prior())
    with pytest.raises(TableError, match="does not know"):
        fit_predictor([((9,), 1.0), ((), 2.0)], prior())
    with pytest.raises(TableError, match="positive"):
        fit_predictor([((1,), 0.0), ((), 2.0)], prior())
    with pytest.raises(TableError, match="partition"):
        Prior(base_ms=1.0, delta_ms={0: 0.1, 1: 0.1}, groups=((0,),))


# --- the end-to-end plan ---------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(5))
def test_held_out_subnets_never_overlap_the_fit_set(seed):
    groups = ((0, 1, 2), (3,), (4, 5), (6, 7, 8, 9))
    made = plan_end_to_end(groups, fit_samples=12, holdout=10, seed=seed)
    fit, held = set(made.fit), set(made.holdout)
    assert len(made.fit) == len(fit) == 6 + 12 and len(made.holdout) == len(held) == 10
    assert not fit & held
    assert made.designed == ((), (0, 1, 2), (3,), (4, 5), (6, 7, 8, 9), tuple(range(10)))
    assert sorted(made.order) == sorted([("fit", s) for s in fit] + [("holdout", s) for s in held])
    assert all(0 < len(s) < 10 for s in held)
    assert made == plan_end_to_end(groups, fit_samples=12, holdout=10, seed=seed)


@pytest.mark.parametrize("seed", range(3))
def test_held_out_subnets_spread_evenly_over_the_prediction(seed):
    """Blocks of very different cost (block i costs 1.5^i ms): drawn by k alone, held-out subnets bunch
    together in prediction; spread by it, consecutive ones are at least half an even step apart."""
    groups = tuple((i,) for i in range(12))

    def predict(subset):
        return 100.0 - sum(1.5 ** i for i in subset)

    def gaps(plan):
        predicted = np.sort([predict(s) for s in plan.holdout])
        return np.diff(predicted), predicted[-1] - predicted[0]

    by_k = plan_end_to_end(groups, fit_samples=12, holdout=10, seed=seed)
    spread = plan_end_to_end(groups, fit_samples=12, holdout=10, seed=seed, spread_by=predict)
    steps, width = gaps(spread)
    assert len(spread.holdout) == len(set(spread.holdout)) == 10
    assert steps.min() >= 0.5 * width / 9 and width >= 0.8 * (sum(1.5 ** i for i in range(12)) - 2 * 1.5 ** 0)
    assert gaps(by_k)[0].min() < 0.5 * gaps(by_k)[1] / 9  # what the spread is for
    assert not set(spread.holdout) & set(spread.fit) and all(0 < len(s) < 12 for s in spread.holdout)
    assert spread == plan_end_to_end(groups, fit_samples=12, holdout=10, seed=seed, spread_by=predict)


def test_a_small_space_gives_the_held_out_subnets_first():
    made = plan_end_to_end(((0, 1, 2),), fit_samples=10, holdout=10, seed=0)  # 8 subnets, 2 designed
    assert made.designed == ((), (0, 1, 2)) and len(made.holdout) == 6 and made.random == ()
    isolated = plan_end_to_end(((0, 1), (2,)), fit_samples=10, holdout=3, seed=0, designed=False)
    assert isolated.fit == () and len(isolated.holdout) == 3
    spread = plan_end_to_end(((0, 1, 2),), fit_samples=10, holdout=10, seed=0, spread_by=len)
    assert sorted(spread.holdout) == sorted(made.holdout)  # all 6 there are, whatever the prediction
    with pytest.raises(ConfigError, match="--holdout must be an integer"):
        plan_end_to_end(((0,),), fit_samples=1, holdout=-1, seed=0)


def test_a_few_slow_processes_do_not_tilt_the_fit():
    # three of the fit points measured in slow processes (+35 %): the robust fit down-weights them and
    # predicts the held-out subnets as if they were not there; plain least squares would not
    fit_set = plan(fit_samples=12).fit
    slow = {fit_set[1], fit_set[4], fit_set[9]}
    measured = [(s, truth(s) * (1.35 if s in slow else 1.0)) for s in fit_set]
    fitted = fit_predictor(measured, prior(), ridge=0.0)
    assert fitted.fit["downweighted_points"] >= 3
    errors = [abs(fitted.predict(s) / truth(s) - 1) for s in plan(fit_samples=12).holdout]
    assert max(errors) < 0.02
