"""Build and runtime configuration report (``llkd.show_config()``)."""

from __future__ import annotations

import sys


def config() -> dict:
    """What is built and what would run, as a dict."""
    from .selection import _backends
    from .selection._selector import default_n_threads

    info: dict = {"python": sys.version.split()[0]}
    try:
        import llkd

        info["llkd"] = llkd.__version__
    except Exception:  # pragma: no cover
        info["llkd"] = "?"
    native = _backends._import("_selection_cpu")
    info["native"] = {
        "built": native[0] is not None,
        "error": None if native[0] is not None else str(native[1]),
        "n_threads_default": default_n_threads(),
    }
    if native[0] is not None and hasattr(native[0], "build_info"):
        info["native"].update(native[0].build_info())
    from .selection import _contract

    info["selection_contract"] = {
        "source": f"llkd.selection.{_contract.SOURCE}" if _contract.SOURCE else "Python fallback copy",
        "modes": _contract.MODES,
        "weightings": _contract.WEIGHTINGS,
        "tie_tolerance": _contract.TIE_TOLERANCE,
    }
    cuda = _backends._import("_selection_cuda")
    info["cuda"] = {"built": cuda[0] is not None, "devices": _backends.cuda_device_count()}
    if cuda[0] is not None and hasattr(cuda[0], "build_info"):
        try:
            info["cuda"].update(cuda[0].build_info())
        except Exception as exc:  # no driver
            info["cuda"]["error"] = str(exc)
    if info["cuda"]["built"] and info["cuda"]["devices"] > 0:
        info["active_backend"] = "cuda for CUDA tensors, native otherwise"
    elif info["native"]["built"]:
        info["active_backend"] = "native"
    else:
        info["active_backend"] = "numpy"
    for name in ("numpy", "torch", "sklearn", "transformers", "sentence_transformers"):
        mod = sys.modules.get(name)
        if mod is None:
            try:
                mod = __import__(name)
            except Exception:
                info[name] = None
                continue
        info[name] = getattr(mod, "__version__", "?")
    return info


def show_config(file=None) -> None:
    """Print which selection backends are built and which one is active."""
    info = config()
    out = file or sys.stdout

    def emit(prefix, d):
        for key, value in d.items():
            if isinstance(value, dict):
                print(f"{prefix}{key}:", file=out)
                emit(prefix + "  ", value)
            else:
                print(f"{prefix}{key}: {value}", file=out)

    emit("", info)
