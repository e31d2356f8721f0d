"""Built-in prompts (shared by the local and the API teachers)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["SENTIMENT_PROMPT", "TOPIC_PROMPT", "default_prompt"]


#: Few-shot sentiment prompt for short movie reviews. The examples are written for this
#: library (not taken from any data set).
SENTIMENT_PROMPT = {
    "instructions": (
        "Each movie review below is labeled with its sentiment: positive if the critic liked the film, negative if not."
    ),
    "template": "Review: {text}\nSentiment:",
    "few_shot": [
        ("A warm, funny and beautifully acted film that earns every one of its tears.", "positive"),
        ("The plot is a mess and the jokes land with a thud; two hours I will never get back.", "negative"),
        ("Sharp writing and a terrific cast make this the most fun I've had at the movies all year.", "positive"),
        ("Dull, overlong and strangely lifeless, despite the talent involved.", "negative"),
    ],
    "answer_prefix": " ",
    "separator": "\n\n",
}

#: Zero-shot topic prompt; ``{labels}`` is replaced by the comma-separated class names.
TOPIC_PROMPT = {
    "instructions": "Each text below is labeled with its topic, one of: {labels}.",
    "template": "Text: {text}\nTopic:",
    "few_shot": [],
    "answer_prefix": " ",
    "separator": "\n\n",
}

_SENTIMENT_WORDS = {"negative", "positive", "neutral", "mixed"}


def default_prompt(labels: Sequence[str], task: str = "auto") -> dict:
    """The built-in prompt for ``labels``: ``"sentiment"`` or ``"topic"`` (``"auto"``: sentiment
    when every label is one of negative/positive/neutral/mixed)."""
    names = [str(c).lower() for c in labels]
    if task == "auto":
        task = "sentiment" if set(names) <= _SENTIMENT_WORDS else "topic"
    if task == "sentiment":
        p = dict(SENTIMENT_PROMPT)
        actual = {str(c).lower(): c for c in labels}
        p["few_shot"] = [(t, actual[lab]) for t, lab in SENTIMENT_PROMPT["few_shot"] if lab in actual]
        return p
    if task == "topic":
        p = dict(TOPIC_PROMPT)
        p["instructions"] = p["instructions"].format(labels=", ".join(str(c) for c in labels))
        return p
    raise ValueError(f"task must be 'auto', 'sentiment' or 'topic', got {task!r}")
