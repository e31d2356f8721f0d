"""teacher_budget: rounds of teacher queries chosen by the student."""

import numpy as np
import pytest

from llkd import LLKDClassifier
from llkd.selection._acquisition import acquisition_scores, choose_batch
from llkd.teachers import TeacherError


def _task(n=300, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    return X, (X[:, 0] > 0).astype(int)


class CountingTeacher:
    """A callable teacher that records every row it is asked about."""

    def __init__(self, fail_on_call=None):
        self.asked = []
        self.calls = 0
        self.fail_on_call = fail_on_call

    def __call__(self, rows):
        self.calls += 1
        if self.fail_on_call is not None and self.calls == self.fail_on_call:
            raise ConnectionError("server went away")
        self.asked.extend(map(bytes, np.ascontiguousarray(rows)))
        p = 1 / (1 + np.exp(-4 * rows[:, 0]))
        return np.stack([1 - p, p], axis=1)


@pytest.mark.parametrize("budget, expected", [(60, 60), (0.25, 75), (10_000, 300)])
def test_the_teacher_is_asked_about_exactly_the_budget_of_distinct_inputs(budget, expected):
    X, _ = _task()
    t = CountingTeacher()
    clf = LLKDClassifier(t, labels=["a", "b"], teacher_budget=budget, max_epochs=2, random_state=0).fit(X)
    assert len(t.asked) == len(set(t.asked)) == expected == clf.n_teacher_queries_
    assert int((clf.teacher_labels_ >= 0).sum()) == expected  # rows never asked keep -1
    rounds = [h["acquisition"] for h in clf.history_ if "acquisition" in h]
    queries = [r["teacher_queries"] for r in rounds]
    assert queries == sorted(queries) and (not rounds or queries[-1] == expected)
    assert all(0 <= r["agreement_before"] <= 1 and r["pool_scored"] >= r["acquired"] for r in rounds)
    # rounds, then at least max_epochs epochs on everything labelled, until the fit has trained on
    # max_epochs epochs' worth of sqrt(pool * labelled) rows, to the nearest epoch: this student
    # labels the unasked rows for a second one (unqueried="auto" with the MLP student)
    first = [h for h in clf.history_ if "stage" not in h]
    last_round = max([i for i, h in enumerate(first) if "acquisition" in h], default=-1)
    final = first[last_round + 1 :]
    assert len(final) >= 2 and all(h["n_backprop_all"] == expected for h in final)
    trained = sum(h["n_backprop_all"] for h in first)
    if len(final) > 2:
        assert abs(trained - 2 * np.sqrt(300 * expected)) <= expected / 2
    # unqueried="auto": a second student trains max_epochs epochs on every input, the unasked
    # ones labelled by the first student (nothing is left unasked when the budget covers the pool)
    second = [h for h in clf.history_ if h.get("stage") == "student_labels"]
    assert clf.n_student_labelled_ == 300 - expected
    assert len(second) == (2 if expected < 300 else 0) and all(h["n_backprop_all"] == 300 for h in second)
    assert len(clf.history_) == len(first) + len(second) == clf.n_iter_


def test_a_budget_costs_labels_not_optimizer_steps():
    from llkd._active import final_epochs

    # 200 of 1,000 rows labelled in 5 rounds: the round epochs trained on 40+80+120+160 rows
    assert final_epochs(10, 1000, [], 1000) == 10  # everything labelled: max_epochs
    assert final_epochs(10, 1000, [40, 80, 120, 160], 200) == 48  # (10 * 1000 - 400) / 200
    assert final_epochs(3, 1000, [900], 1000) == 3  # never fewer than max_epochs
    # 1,200 of the demo's 4,000 reviews asked, max_epochs=1: 3.33 epochs' worth -> 3, not 4
    assert final_epochs(1, 4000, [], 1200) == 3
    assert final_epochs(1, 4000, [], 1100) == 4  # 3.64 -> 4
    # a student that labels the unasked rows: sqrt(1000 * 100) = 316 rows a max_epoch, 3.16 epochs
    assert final_epochs(10, 1000, [], 100, labeller=True) == 32
    assert final_epochs(10, 1000, [], 1000, labeller=True) == 10  # everything labelled: the same


def test_gold_labels_never_cost_a_query():
    X, y = _task()
    y_part = np.full(len(X), -1)
    y_part[:100] = y[:100]
    t = CountingTeacher()
    clf = LLKDClassifier(t, labels=[0, 1], teacher_budget=50, max_epochs=1, random_state=0).fit(X, y_part)
    gold = set(map(bytes, np.ascontiguousarray(X[:100])))
    assert len(t.asked) == 50 and not gold & set(t.asked)
    assert clf.is_gold_[:100].all() and (clf.teacher_labels_[:100] == y[:100]).all() and clf.n_teacher_queries_ == 50


@pytest.mark.parametrize(
    "budget, exc, words",
    [
        (0, ValueError, "positive"),
        (-5, ValueError, "positive"),
        (1.5, ValueError, "(0, 1]"),
        (0.0, ValueError, "(0, 1]"),
        (1, ValueError, "classes"),
        ("half", ValueError, "teacher_budget"),
    ],
)
def test_bad_budgets_are_refused_before_any_query(budget, exc, words):
    X, _ = _task(40)
    t = CountingTeacher()
    with pytest.raises(exc) as info:
        LLKDClassifier(t, labels=["a", "b"], teacher_budget=budget, max_epochs=1).fit(X)
    assert words in str(info.value) and t.asked == []


def test_a_budget_without_a_teacher_is_refused():
    X, y = _task(40)
    with pytest.raises(ValueError, match="teacher_budget"):
        LLKDClassifier(teacher_budget=10, max_epochs=1).fit(X, y)


def test_a_teacher_failing_mid_round_keeps_every_answer_paid_for():
    X, _ = _task()
    t = CountingTeacher(fail_on_call=4)
    clf = LLKDClassifier(t, labels=["a", "b"], teacher_budget=100, teacher_batch_size=10, max_epochs=1, random_state=0)
    with pytest.raises(TeacherError, match="server went away"):
        clf.fit(X)
    paid = list(t.asked)
    assert len(paid) == 30
    t.fail_on_call = None
    clf.fit(X)  # same teacher object: the 30 answers are remembered
    assert clf.n_teacher_queries_ == 100 - 30
    assert len(t.asked) == len(set(t.asked)) == 100


def test_uncertainty_asks_about_the_rows_nearest_the_boundary():
    X, _ = _task(400)
    t = CountingTeacher()
    clf = LLKDClassifier(
        t, labels=["a", "b"], teacher_budget=100, acquisition="uncertainty", max_epochs=1, random_state=0
    ).fit(X)
    rounds = [h["acquisition"] for h in clf.history_ if "acquisition" in h]
    assert all(r["acquisition_score_mean"] > r["acquisition_score_pool_mean"] for r in rounds)
    asked = np.array([np.frombuffer(b) for b in t.asked])
    seed, later = asked[:20], asked[20:]
    assert np.abs(later[:, 0]).mean() < 0.6 * np.abs(seed[:, 0]).mean()


def test_acquisition_scores_and_batches():
    z = np.array([[5.0, 0.0], [0.1, 0.0], [0.0, 2.0], [1.0, 1.0]])
    u = acquisition_scores(z, "uncertainty")
    m = acquisition_scores(z, "margin")
    assert np.argmax(u) == 3 and np.argmax(m) == 3 and np.argmin(u) == 0 and np.argmin(m) == 0
    assert choose_batch(u, 2, "uncertainty").tolist() == [1, 3]
    feats = np.array([[0.0], [0.0], [10.0], [0.01]])
    # two clusters among the candidates: the near-duplicates 1 and 3 give one pick, not two
    assert 2 in choose_batch(acquisition_scores(z, "diverse"), 2, "diverse", feats, rng=0).tolist()
    with pytest.raises(ValueError, match="acquisition"):
        acquisition_scores(z, "entropy")


def test_power_acquisition_samples_in_proportion_to_the_score():
    scores = np.array([0.9, 0.1, 0.0])
    first = [choose_batch(scores, 1, "power", rng=s)[0] for s in range(2000)]
    share = np.bincount(first, minlength=3) / len(first)
    assert abs(share[0] - 0.9) < 0.03 and share[2] == 0  # a score of 0 is never drawn before others
    assert choose_batch(scores, 2, "power", rng=0).tolist() == [0, 1]
    u = np.random.default_rng(0).random(200)
    a, b = choose_batch(u, 20, "power", rng=1), choose_batch(u, 20, "power", rng=2)
    assert a.tolist() == choose_batch(u, 20, "power", rng=1).tolist()  # reproducible from its rng
    assert a.tolist() != b.tolist() and a.tolist() != choose_batch(u, 20, "uncertainty").tolist()
    assert u[a].mean() > u.mean()  # still favours the uncertain rows


def test_power_acquisition_asks_its_budget_in_rounds_and_not_the_top_of_the_scores():
    X, _ = _task(400)
    asked = {}
    for rule in ("power", "uncertainty"):
        t = CountingTeacher()
        clf = LLKDClassifier(
            t, labels=["a", "b"], teacher_budget=100, acquisition=rule, max_epochs=1, random_state=0
        ).fit(X)
        rounds = [h["acquisition"] for h in clf.history_ if "acquisition" in h]
        assert len(rounds) == 4 and clf.n_teacher_queries_ == 100 == len(set(t.asked))
        asked[rule] = set(t.asked)
    seed = 20  # both draw the same random seed set; the later rounds differ
    assert len(asked["power"] & asked["uncertainty"]) < 100 - seed // 2


def test_random_acquisition_asks_its_whole_budget_before_training_and_uncertainty_in_rounds():
    X, _ = _task()
    fits = {}
    for rule in ("random", "uncertainty"):
        fits[rule] = LLKDClassifier(
            CountingTeacher(), labels=["a", "b"], teacher_budget=100, acquisition=rule, max_epochs=1, random_state=0
        ).fit(X)
    # random draws do not read the student: one round, so the first epoch already has all 100
    first = [h for h in fits["random"].history_ if "stage" not in h]
    assert not any("acquisition" in h for h in fits["random"].history_)
    assert all(h["n_backprop_all"] == 100 for h in first)
    # uncertainty scores everything not yet asked: 300 - 20 after the seed set, then 20 fewer per round
    rounds = [h["acquisition"] for h in fits["uncertainty"].history_ if "acquisition" in h]
    assert [r["pool_scored"] for r in rounds] == [280, 260, 240, 220]
    assert [r["teacher_queries"] for r in rounds] == [40, 60, 80, 100]


def test_the_default_acquisition_is_margin_for_the_mlp_student_and_random_for_the_fine_tuned_one():
    from llkd._active import resolve_acquisition

    assert resolve_acquisition("auto", "mlp") == "margin"
    assert resolve_acquisition("auto", "finetune") == "random"
    assert resolve_acquisition("power", "finetune") == "power"
    assert resolve_acquisition("diverse", "finetune") == "uncertainty"  # no frozen features to cluster
    assert resolve_acquisition("diverse", "mlp") == "diverse"
    X, _ = _task()
    clf = LLKDClassifier(CountingTeacher(), labels=["a", "b"], teacher_budget=100, max_epochs=1, random_state=0).fit(X)
    rounds = [h["acquisition"] for h in clf.history_ if "acquisition" in h]
    assert clf.acquisition == "auto" and clf.training_summary_["acquisition"] == "margin"
    assert [r["teacher_queries"] for r in rounds] == [40, 60, 80, 100]
    # margin asks about the closest calls: the batch's scores stand above the pool's
    assert all(r["acquisition_score_mean"] > r["acquisition_score_pool_mean"] + 0.05 for r in rounds), rounds
    no_budget = LLKDClassifier(CountingTeacher(), labels=["a", "b"], max_epochs=1, random_state=0).fit(X)
    assert no_budget.training_summary_["acquisition"] is None  # nothing was chosen


def test_the_mlp_student_trains_a_full_fit_on_what_is_labelled_before_each_round():
    from llkd._active import round_epochs

    X, _ = _task()
    t = CountingTeacher()
    clf = LLKDClassifier(t, labels=["a", "b"], teacher_budget=100, acquisition="margin", max_epochs=3, random_state=0)
    clf.fit(X)
    first = [h for h in clf.history_ if "stage" not in h]
    # 20 asked per round: 3 epochs on 20 rows, round 2, 3 epochs on 40, ... the last round after epoch 12
    at = [i for i, h in enumerate(first) if "acquisition" in h]
    assert at == [2, 5, 8, 11]
    assert [h["n_backprop_all"] for h in first[:12]] == [20] * 3 + [40] * 3 + [60] * 3 + [80] * 3
    assert all(h["n_backprop_all"] == 100 for h in first[12:]) and len(first) >= 15
    assert len(t.asked) == len(set(t.asked)) == 100 == clf.n_teacher_queries_
    assert round_epochs("mlp", 10) == 10 and round_epochs("finetune", 3) == 1


@pytest.mark.parametrize("calibration", ["center", "auto"])
def test_under_a_budget_the_correction_is_fitted_on_every_answer_so_far(calibration):
    from llkd.teachers import PriorCorrection

    X, _ = _task(400, seed=3)
    teacher = CountingTeacher()
    clf = LLKDClassifier(
        teacher,
        labels=["a", "b"],
        teacher_budget=0.3,
        acquisition="margin",  # rounds: the correction is refitted after each
        calibration=calibration,
        max_epochs=1,
        random_state=0,
    ).fit(X)
    asked = np.flatnonzero(clf.teacher_labels_ >= 0)
    raw = teacher(X[asked])  # the raw answers of every row asked (this call is not counted below)
    want = PriorCorrection(calibration).fit(raw).transform(raw)
    np.testing.assert_allclose(clf.teacher_proba_[asked], want, atol=1e-12)
    np.testing.assert_array_equal(clf.teacher_labels_[asked], want.argmax(1))
    # ... which differs from a fit on a seed set's worth of them (a fifth): the old behaviour
    seed_rows = asked[: len(asked) // 5]
    if calibration == "center":
        seed_fit = PriorCorrection(calibration).fit(teacher(X[seed_rows])).transform(raw)
        assert not np.allclose(seed_fit, want)


def test_early_stopping_with_rounds_is_refused_before_any_query_and_works_in_one_round():
    X, _ = _task(300)
    t = CountingTeacher()
    with pytest.raises(ValueError, match="early_stopping=True does not combine with teacher_budget"):
        LLKDClassifier(t, labels=[0, 1], teacher_budget=150, early_stopping=True, max_epochs=3).fit(X)
    assert t.asked == []
    clf = LLKDClassifier(
        t, labels=[0, 1], teacher_budget=150, acquisition="random", early_stopping=True, n_iter_no_change=1
    ).fit(X)
    assert clf.n_teacher_queries_ == len(t.asked) == 150


def test_a_fraction_of_the_pool_rounds_up_only_past_a_whole_query():
    from llkd._active import resolve_budget

    for fraction, n, want in [(0.07, 100, 7), (0.55, 100, 55), (0.14, 100, 14), (0.28, 100, 28), (0.07, 5000, 350)]:
        assert resolve_budget(fraction, n, 2) == want, (fraction, n)
    assert resolve_budget(0.071, 100, 2) == 8 and resolve_budget(1 / 3, 10, 2) == 4 and resolve_budget(1.0, 9, 2) == 9
