"""OpenAITeacher credentials: redirects, keys in headers/extra_body, pickles, identities, hints."""

import json
import os
import pickle
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

from _openai_server import FakeOpenAIServer, p_positive

from llkd.teachers import OpenAITeacher
from llkd.teachers._openai import OpenAIHTTPError

LABELS = ["negative", "positive"]
SECRET = "sk-test-SECRET-0123456789abcdef"


def make(server, **kw):
    kw = {
        "base_url": server.url,
        "api_key_env": None,
        "backoff": 0.001,
        "max_backoff": 0.01,
        "timeout": 5.0,
        "max_concurrency": 1,
        **kw,
    }
    return OpenAITeacher("fake-model", LABELS, **kw)


def hdr(request, name):
    """A header the server received (urllib sends names capitalised: ``Api-key``)."""
    return {k.lower(): v for k, v in request["headers"].items()}.get(name.lower())


def _origin(url):
    return url.rsplit("/v1", 1)[0]


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_redirect_to_another_origin_is_refused_and_the_key_stays_home(monkeypatch, code):
    monkeypatch.setenv("LLKD_TEST_API_KEY", SECRET)
    with FakeOpenAIServer() as home, FakeOpenAIServer() as other:
        target = other.url + "/chat/completions"
        home.fail_next(("redirect", code, target))
        t = make(home, api_key_env="LLKD_TEST_API_KEY")
        with pytest.raises(OpenAIHTTPError) as ei:
            t.label(["good"])
        msg = str(ei.value)
        assert target in msg and f"HTTP {code}" in msg and "another origin" in msg
        assert SECRET not in msg
        assert ei.value.status == code
        assert other.requests == []  # nothing at all was sent there
        assert len(home.requests) == 1  # a refused redirect is not retried
        assert home.requests[0]["headers"]["Authorization"] == f"Bearer {SECRET}"


def test_redirect_to_another_port_or_scheme_is_another_origin():
    with FakeOpenAIServer() as home:
        host_port = _origin(home.url).split("://", 1)[1]
        for target in (
            "https://" + host_port + "/v1/chat/completions",
            "http://localhost:" + host_port.split(":")[1] + "/v1/chat/completions",
        ):
            home.fail_next(("redirect", 302, target))
            with pytest.raises(OpenAIHTTPError, match="another origin"):
                make(home).label(["good"])


@pytest.mark.parametrize("code", [301, 302, 307, 308])
@pytest.mark.parametrize("absolute", [True, False])
def test_same_origin_redirect_is_followed_with_the_same_request(monkeypatch, code, absolute):
    monkeypatch.setenv("LLKD_TEST_API_KEY", SECRET)
    with FakeOpenAIServer(api_key=SECRET) as home:
        where = "/v2/chat/completions"
        home.fail_next(("redirect", code, (_origin(home.url) + where) if absolute else where))
        t = make(home, api_key_env="LLKD_TEST_API_KEY")
        out = t.label(["good fun"])
        p = p_positive("good fun")
        np.testing.assert_allclose(out.proba, [[1 - p, p]], atol=1e-9)
        assert [r["path"] for r in home.requests] == ["/v1/chat/completions", where]
        assert home.requests[1]["method"] == "POST"
        assert home.requests[1]["body"] == home.requests[0]["body"]


def test_redirect_loop_is_bounded():
    with FakeOpenAIServer() as home:
        home.fail_next(*[("redirect", 307, "/v1/chat/completions")] * 20)
        with pytest.raises(OpenAIHTTPError, match="redirects"):
            make(home, max_retries=0).label(["good"])
        assert len(home.requests) <= 6


def test_key_in_headers_is_sent_but_never_pickled_or_in_identity_or_repr():
    with FakeOpenAIServer() as srv:
        t = make(srv, headers={"api-key": SECRET, "X-Trace": "on"})
        t.label(["good"])
        assert hdr(srv.requests[-1], "api-key") == SECRET
        assert hdr(srv.requests[-1], "X-Trace") == "on"
        blob = pickle.dumps(t)
        assert SECRET.encode() not in blob
        assert SECRET not in repr(t) and SECRET not in json.dumps(t.identity)
        t2 = pickle.loads(blob)
        assert t2.headers["X-Trace"] == "on"
        # The credential was dropped, not stored: the unpickled teacher says so before sending anything.
        n = len(srv.requests)
        with pytest.raises(ValueError, match=r"headers\['api-key'\].*never pickled"):
            t2.label(["good"])
        assert len(srv.requests) == n
        t2.headers["api-key"] = SECRET  # given again, it works
        t2.label(["good"])
        assert hdr(srv.requests[-1], "api-key") == SECRET


def test_api_key_header_reads_the_key_from_the_environment(monkeypatch):
    monkeypatch.setenv("LLKD_TEST_API_KEY", SECRET)
    with FakeOpenAIServer() as srv:
        t = make(srv, api_key_env="LLKD_TEST_API_KEY", api_key_header="api-key")
        t.label(["good"])
        assert hdr(srv.requests[-1], "api-key") == SECRET and hdr(srv.requests[-1], "Authorization") is None
        t2 = pickle.loads(pickle.dumps(t))
        t2.label(["good"])
        assert hdr(srv.requests[-1], "api-key") == SECRET
    assert SECRET.encode() not in pickle.dumps(t)
    with pytest.raises(ValueError, match="api_key_header"):
        OpenAITeacher("m", LABELS, api_key_header="bad header\n")


def test_key_in_extra_body_is_sent_but_not_in_identity_nor_pickle(monkeypatch):
    monkeypatch.setenv("LLKD_TEST_API_KEY", SECRET)
    with FakeOpenAIServer() as srv:
        plain = make(srv, extra_body={"top_k": 5})
        t = make(srv, extra_body={"top_k": 5, "api_key": SECRET, "extra": {"token": "tok-123456", "user": SECRET}})
        t.label(["good"])
        assert srv.requests[-1]["body"]["api_key"] == SECRET
        assert srv.requests[-1]["body"]["extra"] == {"token": "tok-123456", "user": SECRET}
        ident = json.dumps(t.identity)
        assert SECRET not in ident and "tok-123456" not in ident
        assert t.identity["extra_body"]["top_k"] == 5
        # A teacher without credentials keeps its identity (cache keys) unchanged.
        assert plain.identity["extra_body"] == {"top_k": 5}
        blob = pickle.dumps(t)
        assert SECRET.encode() not in blob and b"tok-123456" not in blob
        with pytest.raises(ValueError, match=r"extra_body\['api_key'\]"):
            pickle.loads(blob).label(["good"])


def test_401_hint_without_api_key_env():
    with FakeOpenAIServer(api_key=SECRET) as srv:
        with pytest.raises(OpenAIHTTPError) as ei:
            make(srv, api_key_env=None).label(["good"])
        msg = str(ei.value)
        assert "401" in msg and "$None" not in msg and "api_key_env" in msg


def test_401_hint_names_the_unset_variable(monkeypatch):
    monkeypatch.delenv("LLKD_TEST_API_KEY", raising=False)
    with FakeOpenAIServer(api_key=SECRET) as srv:
        with pytest.raises(OpenAIHTTPError, match=r"LLKD_TEST_API_KEY.*not set"):
            make(srv, api_key_env="LLKD_TEST_API_KEY").label(["good"])


@pytest.mark.parametrize("status", [401, 429])
def test_a_key_the_server_quotes_back_is_redacted_from_errors_and_warnings(monkeypatch, status):
    import warnings

    monkeypatch.setenv("LLKD_TEST_API_KEY", SECRET)
    header_secret = "tok-0123456789-header-secret"
    quoted = f"Incorrect API key provided: Bearer {SECRET} (and {header_secret})"
    with FakeOpenAIServer() as srv:
        t = make(srv, api_key_env="LLKD_TEST_API_KEY", headers={"X-Api-Token": header_secret}, max_retries=1)
        srv.fail_next(*[("status", status, quoted)] * 2)
        with warnings.catch_warnings(record=True) as caught, pytest.raises(OpenAIHTTPError) as ei:
            warnings.simplefilter("always")
            t.label(["good"])
        assert hdr(srv.requests[0], "Authorization") == f"Bearer {SECRET}"  # it was sent
    said = [str(ei.value)] + [str(w.message) for w in caught]
    assert all(SECRET not in m and header_secret not in m for m in said), said
    assert "Incorrect API key provided: Bearer <redacted>" in str(ei.value)
    assert header_secret.encode() not in pickle.dumps(t)  # a header named like a token is a credential


@pytest.mark.parametrize("status", [401, 500])
def test_a_key_in_extra_body_the_server_quotes_back_is_redacted_from_errors_and_logs(caplog, status):
    import warnings

    body_secret, bearer = "tok_9f8e7d6c5b4a3210", "0123456789-bearer-only"
    quoted = f"upstream rejected api_key={body_secret}, token {bearer}"
    with FakeOpenAIServer() as srv:
        extra = {"api_key": body_secret, "auth": {"value": f"Bearer {bearer}"}}
        t = make(srv, extra_body=extra, logprobs=True, max_retries=1)
        srv.fail_next(*[("status", status, quoted)] * 2)
        with warnings.catch_warnings(record=True) as caught, pytest.raises(OpenAIHTTPError) as ei:
            warnings.simplefilter("always")
            t.label(["good"])
        assert srv.requests[0]["body"]["api_key"] == body_secret  # it was sent
    said = [str(ei.value)] + [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records]
    assert "upstream rejected api_key=<redacted>" in str(ei.value)
    assert all(body_secret not in m and bearer not in m for m in said), said


def test_credentials_in_the_base_url_are_refused_without_echoing_them():
    with pytest.raises(ValueError, match="must not hold credentials") as ei:
        OpenAITeacher("m", LABELS, base_url=f"http://admin:{SECRET}@127.0.0.1:9/v1")
    assert SECRET not in str(ei.value)
    with pytest.raises(ValueError, match="must not hold credentials"):
        OpenAITeacher("m", LABELS, base_url=f"https://{SECRET}@api.example.com/v1")


def test_a_fitted_saved_and_exported_student_holds_no_credential(monkeypatch, tiny_encoder_dir, tmp_path):
    from llkd import LLKDClassifier

    monkeypatch.setenv("LLKD_TEST_API_KEY", SECRET)
    header_secret = "tok-0123456789-header-secret"
    texts = [f"{w} film {i}" for i, w in enumerate(["good", "bad", "great", "awful"] * 10)]
    with FakeOpenAIServer(api_key=SECRET) as srv:
        teacher = make(srv, api_key_env="LLKD_TEST_API_KEY", headers={"X-Api-Token": header_secret})
        clf = LLKDClassifier(
            teacher,
            student="mlp",
            encoder=tiny_encoder_dir,
            max_epochs=1,
            teacher_cache=tmp_path / "cache.sqlite",
            random_state=0,
        ).fit(texts)
        assert len(srv.requests) == len(texts)  # the key was good: every text was answered
    clf.save(tmp_path / "saved")
    clf.export(tmp_path / "hf", format="hf")
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "README.md" for p in files) and any(p.suffix == ".sqlite" for p in files)
    for p in files:
        data = p.read_bytes()
        assert SECRET.encode() not in data and header_secret.encode() not in data, p
    assert SECRET.encode() not in pickle.dumps(clf) and SECRET not in repr(clf.training_summary_)


def test_an_extra_body_setting_named_like_a_token_stays_in_the_identity():
    a = OpenAITeacher("m", LABELS, base_url="http://127.0.0.1:9/v1", extra_body={"stop_token": "\n"})
    b = OpenAITeacher("m", LABELS, base_url="http://127.0.0.1:9/v1", extra_body={"stop_token": "."})
    assert a.identity["extra_body"] == {"stop_token": "\n"} and a.identity != b.identity
