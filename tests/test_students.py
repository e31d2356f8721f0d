"""Student data plumbing: pre-tokenised text batches and length-bucketed batching."""

import numpy as np
import pytest
import torch

from llkd.students import TextData, length_bucketed_batches


@pytest.fixture(scope="module")
def tokenizer(tiny_encoder_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_encoder_dir)


TEXTS = ["good", "the movie was very good and the plot was great", "bad", "", "dull story", "awful awful awful"]


def test_text_batches_match_the_tokenizer_padding(tokenizer):
    data = TextData(TEXTS, tokenizer, max_length=8)
    idx = np.array([1, 0, 4])
    got = data.batch(idx, torch.device("cpu"))
    want = tokenizer([TEXTS[i] for i in idx], padding=True, truncation=True, max_length=8, return_tensors="pt")
    assert torch.equal(got["input_ids"], want["input_ids"])
    assert torch.equal(got["attention_mask"], want["attention_mask"])
    assert data.lengths.tolist() == [len(tokenizer(t, truncation=True, max_length=8)["input_ids"]) for t in TEXTS]


def test_text_batches_pad_left_for_left_padding_tokenizers(tokenizer):
    tokenizer = type(tokenizer).from_pretrained(tokenizer.name_or_path, padding_side="left")
    data = TextData(TEXTS, tokenizer, max_length=16)
    got = data.batch(np.array([0, 1]), torch.device("cpu"))
    want = tokenizer([TEXTS[0], TEXTS[1]], padding=True, return_tensors="pt")
    assert torch.equal(got["input_ids"], want["input_ids"])
    assert torch.equal(got["attention_mask"], want["attention_mask"])


@pytest.mark.parametrize("n, batch_size, window", [(0, 4, 3), (1, 4, 3), (103, 8, 3), (64, 8, 50)])
def test_bucketed_batches_cover_every_row_once(n, batch_size, window):
    rng = np.random.RandomState(0)
    lengths = rng.randint(1, 60, size=n)
    order = rng.permutation(n)
    batches = length_bucketed_batches(order, batch_size, lengths, np.random.RandomState(1), window=window)
    flat = np.concatenate(batches) if batches else np.array([], dtype=int)
    assert sorted(flat.tolist()) == list(range(n))
    assert len(batches) == -(-n // batch_size)  # as many steps as plain batching
    assert all(1 <= len(b) <= batch_size for b in batches)


def test_bucketed_batches_group_similar_lengths():
    rng = np.random.RandomState(0)
    lengths = rng.randint(1, 200, size=4000)
    order = rng.permutation(4000)
    plain = length_bucketed_batches(order, 32, None, rng)
    bucketed = length_bucketed_batches(order, 32, lengths, np.random.RandomState(2))

    def width(bs):  # tokens computed, padding included
        return sum(len(b) * lengths[b].max() for b in bs)

    assert width(bucketed) < 0.7 * width(plain)
    # Not sorted overall: the batch order is shuffled.
    firsts = [lengths[b].min() for b in bucketed]
    assert firsts != sorted(firsts)


@pytest.mark.parametrize("progress", [False, True])
@pytest.mark.parametrize("loader", ["load_hf_encoder", "load_sentence_encoder"])
def test_loading_the_encoder_draws_a_bar_only_when_asked(tiny_encoder_dir, capfd, progress, loader):
    from transformers.utils import logging as hf_logging

    from llkd import students

    assert hf_logging.is_progress_bar_enabled()
    if loader == "load_hf_encoder":
        students.load_hf_encoder(tiny_encoder_dir, progress=progress)
    else:
        students.load_sentence_encoder(tiny_encoder_dir, "cpu", progress=progress)
    err = capfd.readouterr().err
    assert ("Loading weights" in err) == progress
    assert hf_logging.is_progress_bar_enabled()  # the caller's setting is restored


def test_a_failed_quiet_load_restores_the_progress_setting(tmp_path):
    from transformers.utils import logging as hf_logging

    from llkd.students import load_hf_encoder

    with pytest.raises(OSError):
        load_hf_encoder(str(tmp_path / "missing"))
    assert hf_logging.is_progress_bar_enabled()
