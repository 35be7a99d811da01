"""Where the raw corpus comes from: the pinned manifest, fetching, mirrors and checksums.

The corpus is the 全唐诗 (Complete Tang Poems) folder of the chinese-poetry repository at a pinned
commit. `fetch` downloads it (or copies it from a local mirror), checking every file against the
sha256 manifest committed in ``data/manifest.json``; a file is written under a temporary name and
renamed only once its checksum matches, so an interrupted download leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tinylm.progress import progress_bar

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MANIFEST_PATH = PROJECT_ROOT / "data" / "manifest.json"
MIRROR_ENV = "TINYLM_DATA_MIRROR"  # a folder laid out like upstream, e.g. <mirror>/chinese-poetry
DATA_DIR_ENV = "TINYLM_DATA_DIR"  # where downloads and packed data go (default: <project>/data)
DOWNLOAD_TIMEOUT_S = 30


class DataError(RuntimeError):
    """A problem with the course data, with a message that says what to do about it."""


@dataclass(frozen=True)
class ManifestFile:
    """One upstream file: its path in the repository, checksum, size and group."""

    path: str
    sha256: str
    bytes: int
    group: str


@dataclass(frozen=True)
class Manifest:
    """The pinned upstream commit and the files the course uses from it."""

    commit: str
    url_template: str
    mirror_subdir: str
    files: tuple[ManifestFile, ...]

    def group(self, name: str) -> list[ManifestFile]:
        """Files of one group (``tang`` for the poems, ``strains`` for the 平仄 labels)."""
        chosen = [f for f in self.files if f.group == name]
        if not chosen:
            groups = sorted({f.group for f in self.files})
            raise ValueError(f"No file group {name!r} in the manifest; groups are {groups}.")
        return chosen

    def url(self, file: ManifestFile) -> str:
        """Raw download address of a file at the pinned commit (the path percent-encoded)."""
        return self.url_template.format(commit=self.commit, path=urllib.parse.quote(file.path))


def load_manifest(path: Path = MANIFEST_PATH) -> Manifest:
    """Read the committed sha256 manifest of the upstream files."""
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    files = tuple(ManifestFile(**f) for f in raw["files"])
    return Manifest(raw["commit"], raw["url_template"], raw["mirror_subdir"], files)


def env_path(name: str) -> Path | None:
    """The folder an environment variable names, or None if it is unset or empty.

    ``~`` is expanded and a relative path is taken from the project root, not the current
    folder: the notebooks run in notebooks/, the command line in the project, and both must
    find the same folder.
    """
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else PROJECT_ROOT / path


def data_dir() -> Path:
    """Root folder for downloads and packed data (TINYLM_DATA_DIR, else ``<project>/data``)."""
    return env_path(DATA_DIR_ENV) or PROJECT_ROOT / "data"


def raw_dir() -> Path:
    """Where the verified upstream files live, laid out as in the upstream repository."""
    return data_dir() / "raw" / "chinese-poetry"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(
    group: str = "tang",
    dest: Path | None = None,
    mirror: Path | str | None = None,
    progress: bool = True,
    manifest: Manifest | None = None,
) -> Path:
    """Download (or copy from a mirror) and verify every file of a group; return the raw folder.

    Files already present with the right checksum are skipped. Each file is written to a
    temporary name, verified, then renamed, so an interrupted fetch never leaves a bad file.
    """
    manifest = manifest or load_manifest()
    dest = Path(dest) if dest is not None else raw_dir()
    mirror = mirror if mirror is not None else env_path(MIRROR_ENV)
    source_root = _mirror_root(Path(mirror), manifest) if mirror else None
    files = manifest.group(group)
    for file in progress_bar(files, desc=f"fetch {group}", unit="file", disable=not progress):
        target = dest / file.path
        if target.exists() and sha256_file(target) == file.sha256:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".part")
        try:
            if source_root is not None:
                _copy_from_mirror(source_root, file, partial)
            else:
                _download(manifest.url(file), partial)
            _verify(partial, file)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
    return dest


def _mirror_root(mirror: Path, manifest: Manifest) -> Path:
    """The folder inside a mirror that mirrors the upstream repository."""
    root = mirror / manifest.mirror_subdir
    if not root.is_dir():
        raise DataError(
            f"{MIRROR_ENV} points at {mirror}, but there is no '{manifest.mirror_subdir}' folder "
            f"inside it. The mirror must hold an exact copy of the upstream repository at "
            f"commit {manifest.commit[:12]} under {mirror / manifest.mirror_subdir}. Fix the "
            f"path, or unset {MIRROR_ENV} to download from upstream."
        )
    return root


def _copy_from_mirror(root: Path, file: ManifestFile, partial: Path) -> None:
    source = root / file.path
    if not source.is_file():
        raise DataError(
            f"The mirror {root} has no file {file.path}. Copy the complete upstream folder into "
            f"the mirror, or unset {MIRROR_ENV} to download from upstream."
        )
    shutil.copyfile(source, partial)


def _download(url: str, partial: Path) -> None:
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            with open(partial, "wb") as out:
                shutil.copyfileobj(response, out)
    except (urllib.error.URLError, OSError) as error:
        raise DataError(
            f"Could not download {url} ({error}). This machine seems to have no internet access "
            f"or the server is unreachable. Check your connection and run again (files already "
            f"verified are kept), or point {MIRROR_ENV} at a folder holding a copy of the "
            f"upstream files, e.g. `export {MIRROR_ENV}=/path/to/mirror`."
        ) from error


def _verify(path: Path, file: ManifestFile) -> None:
    actual = sha256_file(path)
    if actual != file.sha256:
        raise DataError(
            f"Checksum mismatch for {file.path}: expected sha256 {file.sha256[:16]}…, got "
            f"{actual[:16]}…. The copy is damaged or from another commit of the repository, so "
            f"it was not kept. Run the fetch again; if it persists, replace the file in your "
            f"mirror with the upstream file at the pinned commit."
        )
