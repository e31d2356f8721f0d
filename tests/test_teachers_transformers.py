"""TransformersTeacher on tiny random models: exact scores against brute force."""

import os
import pickle

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from llkd.teachers import TeacherCache, TransformersTeacher, label_in_batches  # noqa: E402

WORDS = (
    "<pad> <unk> <s> </s> review sentiment text topic : . , good bad great awful very not "
    "movie film a the is was positive negative neutral really quite so fun dull plot acting "
    "sports politics science yes no"
).split()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny matrices: one thread is fastest, and immune to other jobs on the machine.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tok():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(WORDS)}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 2)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def _llama(seed=0, dtype=torch.float64):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(WORDS),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )
    return LlamaForCausalLM(cfg).to(dtype).eval()


def _gemma3(sliding_window=512, dtype=torch.float64):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(1)
    cfg = Gemma3TextConfig(
        vocab_size=len(WORDS),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=512,
        sliding_window=sliding_window,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )
    return Gemma3ForCausalLM(cfg).to(dtype).eval()


def _gpt2(dtype=torch.float64):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(2)
    cfg = GPT2Config(
        vocab_size=len(WORDS), n_embd=32, n_layer=2, n_head=4, n_positions=256, bos_token_id=2, eos_token_id=3
    )
    return GPT2LMHeadModel(cfg).to(dtype).eval()


@pytest.fixture(scope="module")
def llama():
    return _llama()


TEXTS = [
    "good movie",
    "a very bad film , really dull plot",
    "awful",
    "the acting is great , the plot is not",
    "fun",
    "not fun . not good . quite dull really . so bad",
    "movie",
]

KW = dict(
    template="review : {text} sentiment :",
    instructions="text sentiment",
    few_shot=[("good fun movie", "positive"), ("bad dull film", "negative")],
)


def brute_force_scores(model, teacher, text):
    """Class scores by running every (prompt + verbalizer) alone, full logits, no cache."""
    ctx = teacher._prefix_ids + teacher._tokenize_suffixes([text])[0]
    out = []
    for cls_ids in teacher.verbalizer_ids:
        vs = []
        for v in cls_ids:
            ids = torch.tensor([ctx + v])
            with torch.no_grad():
                lp = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
            vs.append(sum(float(lp[len(ctx) - 1 + j, t]) for j, t in enumerate(v)))
        out.append(float(np.logaddexp.reduce(vs)))
    return np.array(out)


def norm(s):
    """Class log-probabilities (scores are defined up to a per-text constant)."""
    return s - np.logaddexp.reduce(s, axis=1, keepdims=True)


@pytest.mark.parametrize(
    "opts",
    [
        dict(),
        dict(restrict_head=False),
        dict(prefix_cache=False),
        dict(logits_to_keep=False, sort_by_length=False),
        dict(prefix_cache=False, logits_to_keep=False, batch_size=1),
        dict(batch_size=1),
    ],
)
def test_scores_match_brute_force_single_token(tok, llama, opts):
    opts = {"batch_size": 3, **opts}
    T = TransformersTeacher(llama, ["negative", "positive"], tokenizer=tok, **KW, **opts)
    got = T.score(TEXTS)
    want = np.stack([brute_force_scores(llama, T, t) for t in TEXTS])
    if not T.restrict_head:  # normalised over the whole vocabulary
        np.testing.assert_allclose(got, want, atol=1e-9, rtol=1e-9)
    np.testing.assert_allclose(norm(got), norm(want), atol=1e-9, rtol=1e-9)
    assert (T._head is not None) == T.restrict_head  # the restricted head passed its self-check
    out = T.label(TEXTS)
    p = np.exp(want - want.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(out.proba, p, atol=1e-9)
    np.testing.assert_array_equal(out.labels, p.argmax(1))
    np.testing.assert_allclose(out.confidence, p.max(1), atol=1e-9)


MULTI = {
    "negative": ["negative", "very bad", "not good at all ."],
    "neutral": ["neutral", "quite so so"],
    "positive": ["positive", "very good", "really great"],
}


@pytest.mark.parametrize(
    "model_fn,prefix_cache",
    [(_llama, True), (_llama, False), (_gemma3, True), (_gpt2, True)],
    ids=["llama-prefix-cache", "llama-no-cache", "gemma3", "gpt2"],
)
def test_multi_token_verbalizers_exact(tok, model_fn, prefix_cache):
    model = model_fn()
    T = TransformersTeacher(
        model,
        ["negative", "neutral", "positive"],
        tokenizer=tok,
        verbalizers=MULTI,
        batch_size=4,
        prefix_cache=prefix_cache,
        **KW,
    )
    assert [len(v) for v in T.verbalizer_ids[0]] == [1, 2, 5]
    got = T.score(TEXTS)
    want = np.stack([brute_force_scores(model, T, t) for t in TEXTS])
    np.testing.assert_allclose(norm(got), norm(want), atol=1e-8, rtol=1e-8)
    assert T._head is not None


def test_parallel_workers_same_answers(tok, llama):
    torch.set_num_threads(2)  # workers="auto" follows torch's thread count
    try:
        T = TransformersTeacher(
            llama, ["negative", "neutral", "positive"], tokenizer=tok, verbalizers=MULTI, batch_size=2, **KW
        )
        assert T._n_workers(10) == 2 and T._n_workers(1) == 1
        callers = []
        real = torch.set_num_threads

        def recording(n):
            callers.append(threading.current_thread())
            real(n)

        torch.set_num_threads = recording
        try:
            par = T.score(TEXTS * 3)
        finally:
            torch.set_num_threads = real
        np.testing.assert_allclose(T.score(TEXTS[:3]), par[:3], atol=1e-10)  # 3 texts: batches of 2 and 1
        assert torch.get_num_threads() == 2
        # Only the workers set their own count; the caller's thread never changes it.
        assert callers and threading.main_thread() not in callers
    finally:
        torch.set_num_threads(1)
    T1 = TransformersTeacher(
        llama, ["negative", "neutral", "positive"], tokenizer=tok, verbalizers=MULTI, batch_size=2, workers=1, **KW
    )
    np.testing.assert_allclose(par, T1.score(TEXTS * 3), atol=1e-10)
    with pytest.raises(ValueError, match="workers"):
        TransformersTeacher(llama, ["a", "b"], tokenizer=tok, workers=0, **KW)


def test_unusual_head_falls_back_to_the_full_forward(tok):
    model = _llama()

    class Scaled(torch.nn.Module):  # post-processing the restricted head does not know
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, h):
            return self.inner(h) * 3.0

    T = TransformersTeacher(model, ["negative", "positive"], tokenizer=tok, **KW)
    want = T.label(TEXTS).proba
    assert T._head is not None
    model.lm_head = Scaled(model.lm_head)
    T2 = TransformersTeacher(model, ["negative", "positive"], tokenizer=tok, **KW)
    got = T2.label(TEXTS).proba
    assert T2._head is None
    assert not np.allclose(got, want)  # the scaling matters, and was applied
    ref = np.stack([brute_force_scores(model, T2, t) for t in TEXTS])
    np.testing.assert_allclose(got, np.exp(norm(ref)), atol=1e-9)
    # A config the model's own forward ignores: the self-check catches the difference.
    m3 = _llama()
    m3.config.final_logit_softcapping = 0.5
    T3 = TransformersTeacher(m3, ["negative", "positive"], tokenizer=tok, **KW)
    np.testing.assert_allclose(T3.label(TEXTS).proba, want, atol=1e-9)
    assert T3._head is None


def test_sliding_window_shorter_than_prompt_single_token(tok):
    # Gemma-style local attention with a window shorter than the prompt: the main pass
    # has no padding before real tokens, so it stays exact.
    model = _gemma3(sliding_window=6)
    T = TransformersTeacher(model, ["negative", "positive"], tokenizer=tok, batch_size=3, **KW)
    got = T.score(TEXTS)
    want = np.stack([brute_force_scores(model, T, t) for t in TEXTS])
    np.testing.assert_allclose(norm(got), norm(want), atol=1e-8, rtol=1e-8)


def test_float32_model_close_to_brute_force(tok):
    model = _llama(dtype=torch.float32)
    T = TransformersTeacher(model, ["negative", "positive"], tokenizer=tok, batch_size=4, **KW)
    got = T.score(TEXTS)
    want = np.stack([brute_force_scores(model, T, t) for t in TEXTS])
    np.testing.assert_allclose(norm(got), norm(want), atol=1e-4)


def test_int8_quantization_close(tok):
    model = _llama(dtype=torch.float32)
    T = TransformersTeacher(model, ["negative", "positive"], tokenizer=tok, **KW)
    Q = TransformersTeacher(_llama(dtype=torch.float32), ["negative", "positive"], tokenizer=tok, quantize="int8", **KW)
    assert Q.identity != T.identity and Q.identity["weights"] == T.identity["weights"]
    # the linear layers are dynamically quantised, the output layer excepted ...
    quantised = [m for m in Q.model.modules() if type(m).__module__.startswith("torch.ao.nn.quantized")]
    assert quantised and not any(isinstance(m, torch.nn.Linear) for m in Q.model.model.modules())
    assert isinstance(Q.model.get_output_embeddings(), torch.nn.Linear)
    # ... so the answers move, but stay close
    q, t = Q.label(TEXTS).proba, T.label(TEXTS).proba
    assert not np.array_equal(q, t)
    np.testing.assert_allclose(q, t, atol=0.05)


def test_default_prompts(tok, llama):
    T = TransformersTeacher(llama, ["negative", "positive"], tokenizer=tok)
    assert "Sentiment:" in T.template and len(T.few_shot) == 4
    assert T.prompt_for("x").endswith("Review: x\nSentiment:")
    T2 = TransformersTeacher(llama, ["sports", "politics", "science"], tokenizer=tok)
    assert T2.few_shot == [] and "sports, politics, science" in T2.instructions
    assert T2.label(["a film"]).proba.shape == (1, 3)


def test_identity(tok, llama):
    a = TransformersTeacher(llama, ["negative", "positive"], tokenizer=tok, **KW)
    b = TransformersTeacher(llama, ["negative", "positive"], tokenizer=tok, batch_size=1, prefix_cache=False, **KW)
    assert a.identity == b.identity  # speed options do not change the answers
    c = TransformersTeacher(
        llama, ["negative", "positive"], tokenizer=tok, **{**KW, "template": "text : {text} sentiment :"}
    )
    d = TransformersTeacher(_llama(seed=5), ["negative", "positive"], tokenizer=tok, **KW)
    e = TransformersTeacher(llama, ["negative", "positive"], tokenizer=tok, verbalizers={"positive": ["good"]}, **KW)
    ids = {str(x.identity) for x in (a, c, d, e)}
    assert len(ids) == 4


def test_truncation(tok, llama):
    T = TransformersTeacher(llama, ["negative", "positive"], tokenizer=tok, max_text_tokens=3, **KW)
    long = "good " * 50
    (s,) = T._tokenize_suffixes([long])
    assert len(s) == len(T._tokenize_suffixes(["good good good"])[0])
    np.testing.assert_allclose(T.score([long]), T.score(["good good good"]), atol=1e-12)
    assert T.label([long]).proba.shape == (1, 2)


def test_bad_arguments(tok, llama):
    labels = ["negative", "positive"]
    with pytest.raises(ValueError, match=r"\{text\}"):
        TransformersTeacher(llama, labels, tokenizer=tok, template="no field")
    with pytest.raises(ValueError, match="same tokens"):
        TransformersTeacher(llama, labels, tokenizer=tok, verbalizers=[["good"], ["good"]], **KW)
    with pytest.raises(ValueError, match="unknown class"):
        TransformersTeacher(llama, labels, tokenizer=tok, template="{text} :", few_shot=[("x", "meh")])
    with pytest.raises(ValueError, match="3 entries for 2 classes"):
        TransformersTeacher(llama, labels, tokenizer=tok, verbalizers=["a", "b", "c"], **KW)
    with pytest.raises(ValueError, match="unknown classes"):
        TransformersTeacher(llama, labels, tokenizer=tok, verbalizers={"meh": ["x"]}, **KW)
    with pytest.raises(TypeError, match="tokenizer is required"):
        TransformersTeacher(llama, labels)
    with pytest.raises(ValueError, match="at least 2 classes"):
        TransformersTeacher(llama, ["one"], tokenizer=tok)
    with pytest.raises(ValueError, match="batch_size"):
        TransformersTeacher(llama, labels, tokenizer=tok, batch_size=0)
    T = TransformersTeacher(llama, labels, tokenizer=tok, **KW)
    with pytest.raises(TypeError, match="sequence of str"):
        T.label("a single string")
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        T.label(["ok", 3])
    assert len(T.label([])) == 0


def test_cache_and_pickle(tok, llama, tmp_path):
    T = TransformersTeacher(llama, ["negative", "positive"], tokenizer=tok, **KW)
    calls = []
    orig = T._score_batch

    def spy(batch):
        calls.append(len(batch))
        return orig(batch)

    T._score_batch = spy
    out1 = label_in_batches(T, TEXTS, batch_size=2, cache=tmp_path / "c.sqlite")
    assert sum(calls) == len(TEXTS)
    calls.clear()
    out2 = label_in_batches(T, TEXTS, batch_size=2, cache=TeacherCache(tmp_path / "c.sqlite"))
    assert calls == []
    np.testing.assert_allclose(out1.proba, out2.proba)
    del T._score_batch
    T.label(["good"])
    assert T._prefix_kv is not None
    T2 = pickle.loads(pickle.dumps(T))
    assert T2._prefix_kv is None
    np.testing.assert_allclose(T2.label(TEXTS).proba, out1.proba, atol=1e-12)


@pytest.mark.parametrize("name", ["/nonexistent/model", "./models/none", "~/no-such-llm", "model.gguf"])
def test_a_local_model_that_is_not_there_is_named(name):
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        TransformersTeacher(name, ["negative", "positive"])


def test_a_verbalizer_that_is_a_token_prefix_of_another_class_warns(tok, llama):
    classes = ["negative", "neutral", "positive"]
    with pytest.warns(UserWarning, match="'not' of class 'neutral' is a token prefix of 'not bad' of class 'positive'"):
        TransformersTeacher(
            llama,
            classes,
            tokenizer=tok,
            verbalizers={"negative": "bad", "neutral": "not", "positive": "not bad"},
            **KW,
        )
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a shared first word alone ("very bad", "very good") is fine
        TransformersTeacher(llama, classes, tokenizer=tok, verbalizers=MULTI, **KW)
