"""OpenAITeacher under faults: the method never changes silently; permanent failures are quick."""

import os
import pickle
import sys
import time
import warnings

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

from _openai_server import FakeOpenAIServer, p_positive

from llkd.teachers import (
    OpenAITeacher,
    TeacherCache,
    TeacherError,
    identity_key,
    label_in_batches,
)
from llkd.teachers._openai import OpenAIHTTPError

LABELS = ["negative", "positive"]
TEXTS = [f"{w} movie {i}" for i, w in enumerate(["good fun", "bad", "great", "awful dull", "plain", "love"] * 5)]


def make(server, **kw):
    kw = {"base_url": server.url, "api_key_env": None, "backoff": 0.001, "max_backoff": 0.01, "timeout": 5.0, **kw}
    return OpenAITeacher("fake-model", LABELS, **kw)


def expected(texts):
    p = np.array([p_positive(t) for t in texts])
    return np.stack([1 - p, p], axis=1)


# --------------------------------------------------------------------------- the method is decided once


@pytest.mark.parametrize("concurrency", [1, 4])
def test_auto_a_later_response_without_logprobs_is_retried_not_a_switch(concurrency):
    with FakeOpenAIServer() as srv:
        t = make(srv, max_concurrency=concurrency)
        t.label(TEXTS[:2])
        assert t.mode_ == "logprobs"
        srv.fail_next(("nologprobs",), ("nologprobs",))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            out = t.label(TEXTS)
        assert t.mode_ == "logprobs"
        np.testing.assert_allclose(out.proba, expected(TEXTS), atol=1e-9)
        assert all(r["body"]["temperature"] == 0 for r in srv.requests)  # never sampled
        assert len(srv.requests) == 2 + len(TEXTS) + 2


def test_auto_one_faulty_first_response_does_not_decide():
    with FakeOpenAIServer() as srv:
        srv.fail_next(("nologprobs",))
        t = make(srv, max_concurrency=4)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            out = t.label(TEXTS[:8])
        assert t.mode_ == "logprobs"
        np.testing.assert_allclose(out.proba, expected(TEXTS[:8]), atol=1e-9)


def test_auto_identity_records_the_method_and_keeps_old_keys():
    kw = {"base_url": "http://127.0.0.1:9/v1", "api_key_env": None}
    undecided = OpenAITeacher("fake-model", LABELS, **kw)
    # Pinned on the code before the method was recorded, when the identity still held
    # base_url: that key stays reachable as the legacy identity, so old caches are read.
    assert (
        identity_key(undecided.legacy_identities[0], LABELS)
        == "fc0ebfd78aa04166cb59b518c0f962db9c6877d6028246949f3bdfda6118f45c"
    )
    assert "base_url" not in undecided.identity
    assert "method" not in undecided.identity
    with FakeOpenAIServer() as srv:
        t = make(srv)
        before = t.identity
        t.label(["good"])
        assert t.mode_ == "logprobs" and t.identity == before
    with FakeOpenAIServer(logprobs=False) as srv:
        t = make(srv, n_samples=2)
        before = t.identity
        with pytest.warns(UserWarning, match="self-consistency"):
            t.label(["good"])
        assert t.mode_ == "sampling" and t.identity == {**before, "method": "sampling"}
    for fixed in (True, False):  # fixed methods: identities unchanged by a request
        t = OpenAITeacher("m", LABELS, logprobs=fixed, **kw)
        assert "method" not in t.identity


def test_auto_sampled_answers_are_cached_under_their_own_key(tmp_path):
    db = tmp_path / "c.sqlite"
    with FakeOpenAIServer(logprobs=False) as srv:
        with pytest.warns(UserWarning, match="self-consistency"):
            first = label_in_batches(make(srv, n_samples=2), TEXTS[:6], batch_size=4, cache=db)
        assert set(TeacherCache(db)._con().execute("SELECT DISTINCT teacher FROM answers").fetchall()) == {
            (identity_key({**make(srv, n_samples=2).identity, "method": "sampling"}, LABELS),)
        }
    with FakeOpenAIServer() as srv:
        # A fresh teacher, against a server with logprobs: the pool cached whole is read, not asked,
        # and the teacher settles on sampling, so a new text is answered the same way.
        t = make(srv, n_samples=2)
        again = label_in_batches(t, TEXTS[:6], batch_size=4, cache=db)
        np.testing.assert_array_equal(again.proba, first.proba)
        assert len(srv.requests) == 0 and t.mode_ == "sampling"
        label_in_batches(t, TEXTS[6:7], cache=db)
        assert [r["body"]["temperature"] != 0 for r in srv.requests] == [True]
        # Part of the pool new: the teacher decides again, and answers by logprobs under its own key.
        out = label_in_batches(make(srv, n_samples=2), TEXTS[:8], batch_size=4, cache=db)
        np.testing.assert_allclose(out.proba, expected(TEXTS[:8]), atol=1e-9)


def test_fully_cached_run_needs_no_server(tmp_path):
    db = tmp_path / "c.sqlite"
    with FakeOpenAIServer() as srv:
        a = label_in_batches(make(srv), TEXTS, batch_size=8, cache=db)
    dead = OpenAITeacher("fake-model", LABELS, base_url=srv.url, api_key_env=None)
    b = label_in_batches(dead, TEXTS, batch_size=8, cache=db)
    np.testing.assert_allclose(a.proba, b.proba)


def test_logprobs_true_missing_is_retried():
    with FakeOpenAIServer() as srv:
        srv.fail_next(("nologprobs",))
        t = make(srv, logprobs=True, max_concurrency=1)
        out = t.label(TEXTS[:3])
        np.testing.assert_allclose(out.proba, expected(TEXTS[:3]), atol=1e-9)
        assert t.n_requests_ == 4


def test_logprobs_true_never_drops_the_batch_paid_answers(tmp_path):
    db = tmp_path / "c.sqlite"
    with FakeOpenAIServer() as srv:
        # The 3rd text's request never gets logprobs; the other answers of its batch are kept.
        srv.fail_next(None, None, *[("nologprobs",)] * 3)
        t = make(srv, logprobs=True, max_concurrency=1, max_retries=2)
        with pytest.raises(TeacherError, match="no logprobs") as ei:
            label_in_batches(t, TEXTS[:4], batch_size=4, cache=db, sort_by_length=False)
        assert isinstance(ei.value.__cause__, ValueError)
        assert len(TeacherCache(db)) == 2
        n = len(srv.requests)
        out = label_in_batches(make(srv, logprobs=True), TEXTS[:4], batch_size=4, cache=db)
        assert len(srv.requests) == n + 2  # only the two texts not answered before
        np.testing.assert_allclose(out.proba, expected(TEXTS[:4]), atol=1e-9)


def test_answers_in_flight_at_a_failure_are_remembered_without_a_cache():
    texts = [f"good film {i}" for i in range(12)]
    memory = {}
    with FakeOpenAIServer(delay=0.3) as srv:
        # the 2nd request fails at once; the requests in flight beside it still complete
        srv.fail_next(None, ("status", 400, "bad request"))
        t = make(srv, logprobs=True, max_concurrency=4, max_retries=0)
        with pytest.raises(TeacherError, match="bad request"):
            label_in_batches(t, texts, batch_size=4, memory=memory)
        paid = len(srv.requests) - 1
        assert paid >= 2 and len(memory) == paid  # every answer paid for, kept
        n = len(srv.requests)
        out = label_in_batches(t, texts, batch_size=4, memory=memory)
        assert len(srv.requests) - n == len(texts) - paid
        np.testing.assert_allclose(out.proba, expected(texts), atol=1e-9)


def test_logprobs_required_on_a_server_without_them():
    with FakeOpenAIServer(logprobs=False) as srv:
        t = make(srv, logprobs=True, max_retries=2)
        with pytest.raises(ValueError, match="no logprobs") as ei:
            t.label(["good"])
        assert "3 attempts" in str(ei.value) and len(srv.requests) == 3


# --------------------------------------------------------------------------- permanent failures


def test_connection_refused_fails_at_once():
    t = OpenAITeacher("m", LABELS, base_url="http://127.0.0.1:9/v1", api_key_env=None)  # default retries
    sleeps = []
    t._sleep = sleeps.append
    with pytest.raises(OpenAIHTTPError, match="connection refused") as ei:
        t.label(["good"])
    assert t.n_requests_ == 1 and sleeps == []
    assert "127.0.0.1:9" in str(ei.value)


def test_a_server_that_never_answers_is_given_up_quickly():
    with FakeOpenAIServer() as srv:
        srv.fail_next(*[("sleep", 3.0)] * 10)
        t = make(srv, timeout=0.2, max_concurrency=1)  # max_retries=5 by default
        with pytest.raises(OpenAIHTTPError, match="timed out") as ei:
            t.label(["good"])
        assert t.n_requests_ == 2  # the default timeout_retries=1, not 6 attempts
        assert "2 attempts" in str(ei.value)


def test_deadline_bounds_a_batch():
    with FakeOpenAIServer() as srv:
        srv.fail_next(*[("sleep", 3.0)] * 20)
        t = make(srv, timeout=0.4, timeout_retries=10, max_retries=10, deadline=1.0, max_concurrency=1)
        start = time.monotonic()
        with pytest.raises(OpenAIHTTPError, match="deadline of 1 s") as ei:
            t.label(["good", "bad"])
        took = time.monotonic() - start
        # Without the deadline: 11 attempts x 0.4 s per text; with it, about 1 s in all.
        assert took < 4.0 and t.n_requests_ <= 4
        assert ei.value is not None
    with pytest.raises(ValueError, match="deadline"):
        OpenAITeacher("m", LABELS, deadline=0)
    with pytest.raises(ValueError, match="timeout_retries"):
        OpenAITeacher("m", LABELS, timeout_retries=-1)


# --------------------------------------------------------------------------- usage


def test_usage_is_counted_over_every_response():
    with FakeOpenAIServer() as srv:  # the fake reports 1 prompt + 1 completion token per chat response
        srv.fail_next(("nologprobs",))
        t = make(srv, logprobs=True, max_concurrency=3)
        t.label(TEXTS[:5])
        assert t.n_requests_ == 6
        assert t.usage_ == {"prompt_tokens": 6, "completion_tokens": 6, "total_tokens": 12}
        t2 = make(srv, endpoint="completions")  # no usage in those responses
        t2.label(TEXTS[:2])
        assert t2.usage_ == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


def test_cost_is_the_usage_priced_per_million_tokens():
    with FakeOpenAIServer() as srv:
        t = make(srv, prices={"prompt": 0.5, "completion": 2.0})
        assert t.cost_ == 0.0
        t.label(TEXTS[:4])
        assert t.cost_ == pytest.approx((4 * 0.5 + 4 * 2.0) / 1e6)
        assert make(srv).cost_ is None
        assert pickle.loads(pickle.dumps(t)).prices == t.prices
        assert t.identity == make(srv).identity  # what a server charges does not change its answers


@pytest.mark.parametrize(
    "prices", [{"prompt": 1.0}, {"prompt": -1, "completion": 1}, {"prompt": "1", "completion": 1}, [1, 2]]
)
def test_bad_prices_are_refused(prices):
    with pytest.raises(ValueError, match="prices"):
        OpenAITeacher("m", ["a", "b"], api_key_env=None, base_url="http://127.0.0.1:1/v1", prices=prices)


def _top(token, logprob, tops):
    return {"token": token, "logprob": logprob, "top_logprobs": tops}


MALFORMED = {
    "a choice that is a number": {"choices": [1]},
    "a logprobs item that is a string": {
        "choices": [{"message": {"content": "positive"}, "logprobs": {"content": ["x"]}}]
    },
    "a logprob that is a string": {
        "choices": [{"message": {"content": "positive"}, "logprobs": {"content": [_top("positive", "abc", [])]}}]
    },
    "logprobs that are a list": {"choices": [{"message": {"content": "positive"}, "logprobs": ["x"]}]},
    "top_logprobs that are a number": {
        "choices": [{"message": {"content": "positive"}, "logprobs": {"content": [_top("positive", -0.1, 7)]}}]
    },
    "content that is a number": {"choices": [{"message": {"content": 5}, "logprobs": None}]},
}


@pytest.mark.parametrize("what", list(MALFORMED))
def test_a_malformed_response_is_retried_and_then_named(what):
    class Server(FakeOpenAIServer):
        def _chat(self, body):
            return MALFORMED[what]

    with Server() as srv:
        t = make(srv, logprobs=True, max_retries=2)
        with pytest.raises(OpenAIHTTPError, match="failed after 3 attempts: malformed response"):
            t.label(["good"])
        assert len(srv.requests) == 3


def test_huge_or_positive_logprobs_give_a_distribution_not_nan():
    tops = [{"token": "positive", "logprob": 1000.0}, {"token": "negative", "logprob": 999.0}]

    class Server(FakeOpenAIServer):
        def _chat(self, body):
            return {
                "choices": [
                    {"message": {"content": "positive"}, "logprobs": {"content": [_top("positive", 1000.0, tops)]}}
                ]
            }

    with Server() as srv:
        p = make(srv, logprobs=True).label(["good"]).proba[0]
    np.testing.assert_allclose(p, [1 / (1 + np.e), np.e / (1 + np.e)])
