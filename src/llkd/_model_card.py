"""The model card (README.md) written with a saved or exported student."""

from __future__ import annotations

import json

_LOADING = {
    "llkd": "```python\nfrom llkd import LLKDClassifier\nclf = LLKDClassifier.load(PATH)\nclf.predict(texts)\n```",
    "hf": (
        "```python\nfrom transformers import pipeline\n"
        'clf = pipeline("text-classification", model=PATH, trust_remote_code=True)\n'
        "clf(texts, truncation=True)\n```\n\n"
        "`trust_remote_code=True` runs `modeling_llkd.py` from this directory: the student "
        "mean-pools the encoder's token states, which no built-in transformers head does."
    ),
    "onnx": (
        "```python\nfrom llkd.deploy import OnnxStudent\n"
        "clf = OnnxStudent(PATH)  # onnxruntime and tokenizers only, no torch\n"
        "clf.predict(texts)\n```"
    ),
}
_LOADING_FEATURES = {
    "llkd": _LOADING["llkd"].replace("clf.predict(texts)", "clf.predict(X)  # X: an (n, N_FEATURES) array"),
    "onnx": (
        "```python\nfrom llkd.deploy import OnnxStudent\n"
        "clf = OnnxStudent(PATH)  # onnxruntime only, no torch\n"
        "clf.predict(X)  # X: an (n, N_FEATURES) float array\n```"
    ),
}


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return "`" + json.dumps(value, sort_keys=True) + "`"
    return str(value)


def model_card(est, *, fmt: str, metrics: dict | None = None, files: str = "") -> str:
    """Markdown describing a fitted LLKDClassifier and how to load the directory."""
    s = getattr(est, "training_summary_", None) or {}
    classes = [str(c) for c in est.classes_]
    is_text = bool(getattr(est, "_is_text", True))
    n_features = getattr(est, "n_features_in_", None)
    kind = "text classifier" if is_text else f"classifier of {n_features} numeric features"
    source = "on a teacher's pseudo-labels" if s.get("teacher") or not s else "on gold labels alone (no teacher)"
    lines = [
        "---",
        "library_name: " + ("transformers" if fmt == "hf" else "llkd"),
        *(["pipeline_tag: text-classification"] if is_text else []),
        "tags: [llkd, knowledge-distillation]",
        "---",
        "",
        "# A student distilled with llkd",
        "",
        f"A {len(classes)}-class {kind} ({', '.join(f'`{c}`' for c in classes)}) "
        f"trained by [llkd](https://arxiv.org/abs/2411.08028) {source}.",
        "",
        "## Training",
        "",
        "| | |",
        "|---|---|",
    ]
    rows = [
        ("teacher", s.get("teacher")),
        ("teacher identity", s.get("teacher_identity")),
        ("calibration", s.get("calibration")),
        ("inputs", s.get("n_inputs")),
        ("rows labelled by the teacher", s.get("n_teacher_labelled")),
        ("teacher queries paid in this fit", s.get("n_teacher_queries")),
        ("gold rows", s.get("n_gold")),
        ("student", s.get("student")),
        ("input features", s.get("n_features")),
        ("encoder", s.get("encoder")),
        ("encoder layers kept", s.get("encoder_layers")),
        ("selection rule", s.get("selection")),
        ("noise correction", s.get("noise_correction")),
        ("class weights", s.get("class_weight")),
        ("inputs not asked, labelled by the student", s.get("n_student_labelled") or None),
        ("epochs", s.get("epochs")),
        ("fit seconds", s.get("fit_seconds")),
        ("training label shares", s.get("label_shares")),
        ("llkd version", s.get("llkd_version")),
        ("fitted at (UTC)", s.get("fitted_at")),
    ]
    if not s:
        lines.append("| training record | not kept (a model saved before llkd recorded it) |")
    lines += [f"| {k} | {_fmt(v)} |" for k, v in rows if v is not None]
    lines += ["", "## Measured quality", ""]
    if metrics:
        lines += ["| metric | value |", "|---|---|"] + [f"| {k} | {_fmt(v)} |" for k, v in metrics.items()]
    else:
        lines.append(
            "None recorded: pass `metrics=` to `export()` with what you measured on held-out gold labels. "
            "The pseudo-labels the student learned from are not a measure of its accuracy."
        )
    lines += [
        "",
        "## Intended use",
        "",
        f"Classifying {'texts' if is_text else 'rows'} like the training inputs into the classes above, "
        "in place of the teacher, "
        "where its cost or latency is too high. The student inherits its teacher's errors and biases, "
        "and it has not been evaluated beyond the metrics listed; check it on gold labels from your "
        "own data before relying on it, and do not use it for decisions about people without that check.",
        "",
        "## Loading",
        "",
        (_LOADING if is_text else _LOADING_FEATURES)[fmt]
        .replace("PATH", "path")
        .replace("N_FEATURES", str(n_features)),
    ]
    if files:
        lines += ["", files]
    return "\n".join(lines) + "\n"
