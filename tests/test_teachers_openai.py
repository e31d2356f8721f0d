"""OpenAITeacher against a real HTTP server on loopback (tests/_openai_server.py)."""

import json
import logging
import os
import pickle
import sys
import time
import warnings

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

from _openai_server import FakeOpenAIServer, p_positive  # noqa: E402

from llkd.teachers import OpenAITeacher, TeacherCache, TeacherError, identity_key, label_in_batches  # noqa: E402
from llkd.teachers._openai import OpenAIHTTPError  # noqa: E402

LABELS = ["negative", "positive"]
TEXTS = ["good fun movie", "bad and dull", "great great great", "awful", "a film", "good but dull plot, bad"]


def make(server, **kw):
    kw = {"base_url": server.url, "api_key_env": None, "backoff": 0.001, "max_backoff": 0.01, "timeout": 5.0, **kw}
    t = OpenAITeacher("fake-model", LABELS, **kw)
    return t


def expected(texts):
    p = np.array([p_positive(t) for t in texts])
    return np.stack([1 - p, p], axis=1)


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_logprobs_give_the_distribution(endpoint):
    with FakeOpenAIServer() as srv:
        t = make(srv, endpoint=endpoint)
        out = t.label(TEXTS)
        assert t.mode_ == "logprobs"
        np.testing.assert_allclose(out.proba, expected(TEXTS), atol=1e-9)
        np.testing.assert_array_equal(out.labels, expected(TEXTS).argmax(1))
        assert len(srv.requests) == len(TEXTS)
        body = srv.requests[0]["body"]
        assert body["max_tokens"] == 1 and body["temperature"] == 0
        if endpoint == "chat":
            assert body["logprobs"] is True and body["top_logprobs"] == 20
            roles = [m["role"] for m in body["messages"]]
            assert roles[0] == "system" and roles[-1] == "user" and "assistant" in roles
            assert "Answer with exactly one of: negative, positive." in body["messages"][0]["content"]
            assert srv.requests[0]["path"] == "/v1/chat/completions"
        else:
            assert body["logprobs"] == 20 and body["prompt"].endswith("Sentiment:")
            assert srv.requests[0]["path"] == "/v1/completions"


@pytest.mark.parametrize("honour_n", [True, False])
def test_fallback_to_self_consistency(honour_n):
    with FakeOpenAIServer(logprobs=False, honour_n=honour_n) as srv:
        t = make(srv, n_samples=6, smoothing=0.5, max_concurrency=1)
        with pytest.warns(UserWarning, match="self-consistency"):
            out = t.label(["great fun", "awful dull"])
        assert t.mode_ == "sampling" and "no logprobs" in t.fallback_reason_
        # 6 votes + 0.5 smoothing per class: probabilities are multiples of 1/7.
        np.testing.assert_allclose((out.proba * 7 - 0.5) % 1, 0, atol=1e-9)
        assert out.labels.tolist() == [1, 0]
        sampled = [r for r in srv.requests if r["body"].get("temperature") != 0]
        per_text = 1 if honour_n else 6
        assert len(sampled) == 2 * per_text
        assert sampled[0]["body"]["n"] == 6
        # Later calls go straight to sampling, without a wasted logprobs request.
        n0 = len(srv.requests)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            t.label(["good"])
        assert all(r["body"]["temperature"] != 0 for r in srv.requests[n0:])


def test_a_pool_cached_whole_in_sampling_mode_is_read_without_asking(tmp_path):
    cache = tmp_path / "c.sqlite"
    with FakeOpenAIServer(logprobs=False) as srv:
        with pytest.warns(UserWarning, match="self-consistency"):
            first = label_in_batches(make(srv, n_samples=3), TEXTS, cache=cache)
        url = srv.url
    # a fresh teacher (another process, say), with the server gone: every answer is in the cache
    t = OpenAITeacher("fake-model", LABELS, base_url=url, api_key_env=None, n_samples=3, max_retries=0)
    again = label_in_batches(t, TEXTS, cache=cache)
    np.testing.assert_array_equal(again.proba, first.proba)
    assert t.mode_ == "sampling"  # settled by the cache, so a new text is sampled too (and needs the server)
    with pytest.raises(TeacherError, match="connection refused"):
        label_in_batches(t, TEXTS + ["new text"], cache=cache)


def test_sampling_mode_when_asked(capsys):
    with FakeOpenAIServer() as srv:
        t = make(srv, logprobs=False, n_samples=3, max_tokens_field="max_completion_tokens", progress=True)
        out = t.label(["great", "awful"])
        assert t.mode_ == "sampling" and out.proba.shape == (2, 2)
        assert all("logprobs" not in r["body"] for r in srv.requests)
        assert all(r["body"]["max_completion_tokens"] == 8 and "max_tokens" not in r["body"] for r in srv.requests)
        assert "asking fake-model" in capsys.readouterr().err


def test_logprobs_required_but_missing():
    with FakeOpenAIServer(logprobs=False) as srv:
        t = make(srv, logprobs=True)
        with pytest.raises(ValueError, match="no logprobs"):
            t.label(["good"])


def test_server_refusing_logprobs_with_400_falls_back():
    with FakeOpenAIServer() as srv:
        srv.fail_next(("status", 400, "logprobs is not supported by this model"))
        t = make(srv, max_concurrency=1, n_samples=2)
        with pytest.warns(UserWarning, match="refused logprobs"):
            out = t.label(["good"])
        assert t.mode_ == "sampling" and len(out) == 1


def test_retries_on_429_500_timeout_and_malformed_json():
    with FakeOpenAIServer() as srv:
        srv.fail_next(
            ("status", 429, {"Retry-After": "0.02"}), ("status", 500), ("status", 503), ("malformed",), ("sleep", 0.6)
        )
        t = make(srv, max_concurrency=1, timeout=0.3, max_retries=6, backoff=0.001, max_backoff=1.0)
        sleeps = []
        t._sleep = lambda s: (sleeps.append(s), time.sleep(s))
        out = t.label(["good"])
        np.testing.assert_allclose(out.proba, expected(["good"]), atol=1e-9)
        assert t.n_requests_ == 6
        assert sleeps[0] == pytest.approx(0.02)  # Retry-After honoured
        # exponential backoff (times a factor in [0.5, 1])
        for i, s in enumerate(sleeps[1:], start=1):
            assert 0.5 * 0.001 * 2**i <= s <= 0.001 * 2**i


def test_retry_after_capped_by_max_backoff():
    with FakeOpenAIServer() as srv:
        srv.fail_next(("status", 429, {"Retry-After": "3600"}))
        t = make(srv, max_backoff=0.05)
        sleeps = []
        t._sleep = sleeps.append
        t.label(["good"])
        assert sleeps == [0.05]


def test_retries_are_bounded():
    with FakeOpenAIServer() as srv:
        srv.fail_next(*[("status", 500)] * 10)
        t = make(srv, max_retries=2, max_concurrency=1)
        with pytest.raises(OpenAIHTTPError, match="failed after 3 attempts: HTTP 500") as ei:
            t.label(["good"])
        assert ei.value.status == 500 and len(srv.requests) == 3


def test_client_errors_are_not_retried():
    with FakeOpenAIServer() as srv:
        srv.fail_next(("status", 400, "model 'fake-model' does not exist"))
        t = make(srv, logprobs=True, max_concurrency=1)
        with pytest.raises(OpenAIHTTPError, match="HTTP 400: model 'fake-model' does not exist") as ei:
            t.label(["good"])
        assert ei.value.status == 400 and len(srv.requests) == 1
        srv.fail_next(("status", 404))
        with pytest.raises(OpenAIHTTPError, match="check base_url and model"):
            t.label(["good"])


def test_concurrency_limit():
    with FakeOpenAIServer(delay=0.05) as srv:
        t = make(srv, max_concurrency=3)
        texts = [f"good {i}" for i in range(12)]
        out = t.label(texts)
        assert len(out) == 12
        assert 1 < srv.max_concurrent <= 3


def test_api_key_never_stored_logged_cached_or_pickled(tmp_path, monkeypatch, caplog):
    secret = "sk-test-SECRET-0123456789"
    monkeypatch.setenv("LLKD_TEST_API_KEY", secret)
    with FakeOpenAIServer(api_key=secret) as srv:
        srv.fail_next(("status", 500))
        t = make(srv, api_key_env="LLKD_TEST_API_KEY")
        with caplog.at_level(logging.DEBUG):
            out = label_in_batches(t, TEXTS, batch_size=4, cache=tmp_path / "c.sqlite")
        assert srv.requests[-1]["headers"]["Authorization"] == f"Bearer {secret}"
        assert len(out) == len(TEXTS)
        assert "retry 1/5" in caplog.text
        blobs = [
            pickle.dumps(t),
            repr(t).encode(),
            json.dumps(t.identity).encode(),
            str(vars(t)).encode(),
            caplog.text.encode(),
        ]
        for f in tmp_path.iterdir():
            blobs.append(f.read_bytes())
        for b in blobs:
            assert secret.encode() not in b
        # A wrong key: the error message names the variable, never the key.
        monkeypatch.setenv("LLKD_TEST_API_KEY", "sk-wrong-key-000")
        with pytest.raises(OpenAIHTTPError) as ei:
            t.label(["good"])
        assert "401" in str(ei.value) and "LLKD_TEST_API_KEY" in str(ei.value)
        assert "sk-wrong" not in str(ei.value)
    # A key that is required but missing fails before any request.
    monkeypatch.delenv("LLKD_TEST_API_KEY")
    t2 = OpenAITeacher(
        "m", LABELS, api_key_env="LLKD_TEST_API_KEY", require_api_key=True, base_url="http://127.0.0.1:9/v1"
    )
    with pytest.raises(OpenAIHTTPError, match="LLKD_TEST_API_KEY"):
        t2.label(["x"])
    with pytest.raises(ValueError, match="name an environment variable"):
        OpenAITeacher("m", LABELS, api_key_env=secret)
    with pytest.raises(ValueError, match="api_key_env"):
        OpenAITeacher("m", LABELS, headers={"Authorization": "Bearer x"})


def test_cache_resumes_without_asking_again(tmp_path):
    with FakeOpenAIServer() as srv:
        t = make(srv)
        a = label_in_batches(t, TEXTS, batch_size=2, cache=tmp_path / "c.sqlite")
        n = len(srv.requests)
        b = label_in_batches(make(srv), TEXTS + ["new text, good"], batch_size=2, cache=tmp_path / "c.sqlite")
        assert len(srv.requests) == n + 1
        np.testing.assert_allclose(b.proba[: len(TEXTS)], a.proba)


def test_failure_in_a_batch_is_wrapped(tmp_path):
    with FakeOpenAIServer() as srv:
        t = make(srv, max_retries=0, max_concurrency=1)
        srv.fail_next(*([None] * 4), ("status", 500))  # the 5th request fails: batch 2
        srv._failures = [a for a in srv._failures]
        with pytest.raises(TeacherError, match="batch 2 of 3") as ei:
            label_in_batches(t, TEXTS, batch_size=2, cache=tmp_path / "c.sqlite", sort_by_length=False)
        assert isinstance(ei.value.__cause__, OpenAIHTTPError)
        assert TeacherCache(tmp_path / "c.sqlite").stats()["rows"] == 4


def test_answer_parsing():
    t = OpenAITeacher(
        "m",
        ["negative", "neutral", "positive"],
        api_key_env=None,
        verbalizers={"positive": ["positive", "good"]},
        base_url="http://localhost:1/v1",
    )
    assert t.class_of_answer("Positive.") == 2
    assert t.class_of_answer("  good") == 2
    assert t.class_of_answer("negative - the critic hated it") == 0
    assert t.class_of_answer("I would say neutral overall") == 1
    assert t.class_of_answer("no idea") is None
    assert t.class_of_answer("positive or negative") == 2
    assert t.class_of_answer("") is None
    assert t._class_of_token(" Pos") == 2
    assert t._class_of_token("ne") is None  # negative or neutral: ambiguous
    assert t._class_of_token("neg") == 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="endpoint"):
        OpenAITeacher("m", LABELS, endpoint="embeddings")
    with pytest.raises(ValueError, match="base_url"):
        OpenAITeacher("m", LABELS, base_url="localhost:8000")
    with pytest.raises(ValueError, match="logprobs"):
        OpenAITeacher("m", LABELS, logprobs="yes")
    with pytest.raises(ValueError, match="max_concurrency"):
        OpenAITeacher("m", LABELS, max_concurrency=0)
    with pytest.raises(ValueError, match="given for classes"):
        OpenAITeacher("m", LABELS, verbalizers=[["bad"], ["Bad"]])
    with pytest.raises(ValueError, match=r"\{text\}"):
        OpenAITeacher("m", LABELS, template="no field")


def test_the_same_model_behind_another_url_reuses_the_cached_answers(tmp_path):
    """The cache identity is the model and how it is asked, not the server's address."""
    cache = tmp_path / "c.sqlite"
    with FakeOpenAIServer() as a, FakeOpenAIServer() as b:
        assert a.url != b.url
        first = label_in_batches(make(a), TEXTS, cache=cache)
        second = label_in_batches(make(b), TEXTS, cache=cache)
        assert len(a.requests) == len(TEXTS) and b.requests == []
    np.testing.assert_array_equal(second.proba, first.proba)


def test_answers_cached_under_the_old_url_keyed_identity_are_read_and_carried_over(tmp_path):
    """Caches written when the identity held base_url are still read (legacy_identities),
    and what is found is copied under the current key, so the next run finds it there."""
    from llkd.teachers import identity_key

    cache = tmp_path / "c.sqlite"
    with FakeOpenAIServer() as srv:
        t = make(srv)
        t.label(TEXTS[:1])  # settle the answering mode, as a run that wrote the cache had
        old_key = identity_key(t.legacy_identities[0], LABELS)
        assert old_key != identity_key(t.identity, LABELS)
        store = TeacherCache(cache)
        store.put(old_key, TEXTS[:4], t.label(TEXTS[:4]))
        new_key = identity_key(t.identity, LABELS)
        assert store.get(new_key, TEXTS, n_classes=2) == {}
        n_before = len(srv.requests)
        out = label_in_batches(make(srv), TEXTS, cache=cache)
        asked = [r["body"] for r in srv.requests[n_before:]]
        assert len(asked) == 2  # only the two texts no cache had
        np.testing.assert_allclose(out.proba, expected(TEXTS), atol=1e-9)
        assert sorted(store.get(new_key, TEXTS, n_classes=2)) == list(range(len(TEXTS)))  # carried over
        store.close()
        n_before = len(srv.requests)
        label_in_batches(make(srv), TEXTS, cache=cache)
        assert len(srv.requests) == n_before


def test_requests_stay_in_flight_across_batches_and_each_answer_is_cached_as_it_arrives(tmp_path):
    """label_in_batches feeds OpenAITeacher.label_iter continuously: with batches of 2 and
    8 request slots, more than 2 requests are in flight at once (batch-by-batch asking never
    exceeds 2), and each answer is in the cache when it is reported."""
    texts = [f"text {i} {'good' if i % 3 else 'bad'}" for i in range(40)]
    cache = TeacherCache(tmp_path / "c.sqlite")
    seen = []

    def on_batch(keys, out):
        key = identity_key(t.identity, LABELS)
        assert len(cache.get(key, keys, n_classes=2)) == len(keys)  # stored before it is reported
        seen.extend(keys)

    with FakeOpenAIServer(delay=0.05) as srv:
        t = make(srv, max_concurrency=8)
        out = label_in_batches(t, texts, batch_size=2, cache=cache, on_batch=on_batch)
        assert srv.max_concurrent > 2
        assert len(srv.requests) == len(texts)
    np.testing.assert_allclose(out.proba, expected(texts), atol=1e-9)
    assert sorted(seen) == sorted(texts)


def test_label_iter_reads_its_input_lazily_and_stops_cleanly():
    with FakeOpenAIServer() as srv:
        t = make(srv, max_concurrency=3)
        pulled = []

        def source():
            for x in TEXTS:
                pulled.append(x)
                yield x

        it = t.label_iter(source())
        first = next(it)
        assert first[0] == TEXTS[0] and len(pulled) == 1  # nothing read ahead of the first answer
        rest = dict(it)
        assert sorted(rest) == sorted(TEXTS[1:])
        np.testing.assert_allclose(np.stack([rest[x] for x in TEXTS[1:]]), expected(TEXTS[1:]), atol=1e-9)


def test_connections_are_kept_alive_and_reused():
    with FakeOpenAIServer() as s:
        t = make(s, max_concurrency=4)
        t.label([f"review {i}" for i in range(40)])
        peers = {r["peer"] for r in s.requests}
    assert len(s.requests) == 40
    assert len(peers) <= 4  # one connection per request slot, not one per request


def test_a_kept_alive_connection_the_server_closed_is_resent_at_once_not_retried():
    with FakeOpenAIServer() as s:
        t = make(s, max_concurrency=1, max_retries=0)
        t.label(["first"])
        s.fail_next(("drop",))
        out = t.label(["second"])
        assert len(s.requests) == 3  # the dropped request and its resend on a new connection
        assert s.requests[1]["peer"] != s.requests[2]["peer"]
    assert out.labels.shape == (1,)


def test_a_dropped_request_on_a_new_connection_is_a_retried_fault():
    with FakeOpenAIServer() as s:
        t = make(s, max_concurrency=1, max_retries=0)
        s.fail_next(("drop",))
        with pytest.raises(OpenAIHTTPError, match="failed after 1 attempt"):
            t.label(["first"])


def test_a_pickled_teacher_gets_its_own_connection_pool():
    with FakeOpenAIServer() as s:
        t = make(s)
        t.label(["a"])
        u = pickle.loads(pickle.dumps(t))
        assert u._pool is not t._pool and not u._pool._idle
        u.label(["b"])


def test_verbalizers_sharing_a_first_word_warn_in_log_probability_mode():
    classes = ["World News", "World Sports", "Science"]
    for logprobs in (True, "auto"):
        with pytest.warns(UserWarning, match="'World News' .* and 'World Sports' .* start with the same word"):
            OpenAITeacher("m", classes, base_url="http://127.0.0.1:9/v1", api_key_env=None, logprobs=logprobs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # sampling reads whole answers; distinct first words are fine
        OpenAITeacher("m", classes, base_url="http://127.0.0.1:9/v1", api_key_env=None, logprobs=False)
        OpenAITeacher("m", ["World", "Science"], base_url="http://127.0.0.1:9/v1", api_key_env=None)


def test_newsgroup_names_sharing_the_letters_before_a_dot_warn_in_log_probability_mode():
    # "comp.graphics" and "comp.windows.x" differ as words, but a first answer token is "comp" for both
    classes = ["comp.graphics", "comp.windows.x", "sci.space", "rec_autos", "rec-motorcycles"]
    with pytest.warns(UserWarning, match=r"'comp.graphics' .* and 'comp.windows.x' .* same word \('comp'\)"):
        OpenAITeacher("m", classes, base_url="http://127.0.0.1:9/v1", api_key_env=None, logprobs=True)
    with pytest.warns(UserWarning, match=r"'rec_autos' .* and 'rec-motorcycles' .* same word \('rec'\)"):
        OpenAITeacher("m", classes[2:], base_url="http://127.0.0.1:9/v1", api_key_env=None, logprobs=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        OpenAITeacher("m", ["sci.space", "science", "!?", "?!"], base_url="http://127.0.0.1:9/v1", api_key_env=None)
