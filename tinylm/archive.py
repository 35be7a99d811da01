"""Runs archives: train a profile's runs on one machine, hand them to every other laptop.

`python -m tinylm warm` trains the runs a profile's notebooks use (up to an hour on a laptop).
`export_runs` packs those runs, once trained, into one file; `import_runs` checks such a file
whole and installs its runs, so that on the other machines `warm` and the notebooks load them
instead of training them again (``python -m tinylm runs export|import FILE``).

The archive is one plain tar file (model weights hardly compress):

- ``MANIFEST.json``, the first member: the format's name and version, the tinylm version that
  wrote it, the profile (when a profile's runs were exported), and for each run its name, its
  TrainConfig (``model/train_config.json``), its model config (``model/config.json``) and every
  file it packs, with the file's path in the run folder, size and sha256.
- ``runs/<run_name>/log.jsonl``: the training log, which the notebooks plot.
- ``runs/<run_name>/model/``: ``config.json``, ``model.safetensors``, ``tokenizer.json`` and
  ``train_config.json``, the final model. It alone makes the run finished: `tinylm.train.train`
  loads model/ when its train_config.json matches the run's config
  (`tinylm.run_files.is_finished`), and then reads nothing else of the folder.
- ``runs/<run_name>/checkpoint/``, only with ``with_optimizer``: the last checkpoint, its
  ``trainer_state.pt`` included (AdamW's two moments per weight, the step, the random states).
  Only resuming reads it: with it, a run whose model/ is later damaged is written again from
  the checkpoint instead of trained from scratch. It is three times the model's size (the
  weights again, and two moments per weight), so it is left out unless asked for. Its weights
  alone, without trainer_state.pt, would only repeat model/: resuming finds a checkpoint by its
  trainer_state.pt.

Never packed: ``checkpoint.old/``, the lock files, and temporary ``*.tmp``/``*.part`` files.

`import_runs` installs nothing until it has checked everything: the manifest (this format and
version), that the members are exactly the files it lists (regular files under ``runs/``: no
absolute paths, ``..``, links or devices), their sizes and sha256 sums, and every run against
the runs folder. A run folder already there with the same configs (TrainConfig and model
config) is the same run: it is kept as it is and reported as already present. One trained with
another config, one whose training has not finished, or a run this tinylm defines with
another config (the archive comes from another version of the course), refuses the whole
archive. The runs are unpacked into a temporary folder inside the runs folder and each is
renamed into place, one atomic step per run; the temporary folder is removed whatever happens.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import IO, BinaryIO

from tinylm import __version__
from tinylm.download import sha256_file
from tinylm.lock import HOLDER_FILE, LOCK_FILE
from tinylm.model import CONFIG_FILE
from tinylm.pretrained import profile_runs
from tinylm.profiles import PROFILES
from tinylm.run_files import (
    CHECKPOINT_FILES,
    LOG_FILE,
    MODEL_FILES,
    TRAIN_CONFIG_FILE,
    remove_unused_folder,
    saved_config,
)
from tinylm.runs import (
    RUNS,
    RUNS_DIR_ENV,
    TrainConfig,
    config_changes,
    is_plain_name,
    run_folder,
    runs_dir,
)

FORMAT = "tinylm-runs"
FORMAT_VERSION = 1
MANIFEST_FILE = "MANIFEST.json"
MEMBER_ROOT = "runs"  # a run's files are the members runs/<run_name>/<path in its folder>
MODEL_MEMBERS = tuple(f"model/{name}" for name in MODEL_FILES)
OPTIMIZER_MEMBERS = tuple(f"checkpoint/{name}" for name in CHECKPOINT_FILES)
RUN_MEMBERS = (LOG_FILE, *MODEL_MEMBERS, *OPTIMIZER_MEMBERS)  # every path a run may pack
MAX_MANIFEST_BYTES = 16 * 2**20  # far above any real manifest; a larger one is not ours
STAGING_PREFIX = ".import-"  # the temporary folder in the runs folder an import unpacks into
CHUNK_BYTES = 2**20
EXPORT_HINT = "a runs archive is written by `python -m tinylm runs export`"


class ArchiveError(RuntimeError):
    """A runs archive that cannot be written or installed; the message says why and what to do."""


@dataclass(frozen=True)
class ArchivedFile:
    """One file of a run in the archive: its path in the run folder, its size and sha256."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class ArchivedRun:
    """One run in the archive: its name, its configs as saved, and its files."""

    name: str
    train_config: dict
    model_config: dict
    files: tuple[ArchivedFile, ...]

    @property
    def size(self) -> int:
        """Bytes of the run's files."""
        return sum(file.size for file in self.files)


@dataclass(frozen=True)
class Manifest:
    """MANIFEST.json: the runs an archive holds, and what wrote it."""

    runs: tuple[ArchivedRun, ...]
    profile: str | None  # the profile whose runs were exported (its label); None: runs by name
    with_optimizer: bool
    tinylm_version: str

    @property
    def size(self) -> int:
        """Bytes of all the runs' files."""
        return sum(run.size for run in self.runs)

    def to_json(self) -> dict:
        """The manifest as MANIFEST.json holds it: what it is and who wrote it, then the runs."""
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "tinylm_version": self.tinylm_version,
            "profile": self.profile,
            "with_optimizer": self.with_optimizer,
            "runs": [asdict(run) for run in self.runs],
        }


@dataclass(frozen=True)
class ImportResult:
    """What import_runs did: the archive's manifest, the runs installed and those kept."""

    manifest: Manifest
    installed: tuple[str, ...]
    already_present: tuple[str, ...]  # here before, with the same configs: left as they were
    runs_dir: Path


def profile_run_names(profile: str | None = None) -> list[str]:
    """The runs `python -m tinylm warm` trains for the profile (None: TINYLM_PROFILE's)."""
    return [cfg.run_name for cfg in profile_runs(profile)]


def course_configs() -> dict[str, TrainConfig]:
    """Every run this tinylm defines by name: RUNS, and each profile's (notebook 08's sweep)."""
    profiles = {cfg.run_name: cfg for name in PROFILES for cfg in profile_runs(name)}
    return {**profiles, **RUNS}


def untrained_runs(run_names: Sequence[str]) -> list[str]:
    """The runs of run_names that are not finished here, so export_runs would refuse them."""
    course = course_configs()
    return [name for name in run_names if _not_trained_reason(name, course)]


def _not_trained_reason(name: str, course: dict[str, TrainConfig]) -> str | None:
    """Why the run folder holds no finished run of this name (as train sees it), or None."""
    saved = saved_config(run_folder(name))
    if saved is None:
        return "not trained"
    cfg = course.get(name)
    changes = config_changes(saved, cfg) if cfg is not None else []
    if changes:
        return f"trained with another config than this tinylm's run: {'; '.join(changes)}"
    if saved.get("run_name") != name:
        return f"its model is run {saved.get('run_name')!r}'s"
    return None


def export_runs(
    path: str | os.PathLike,
    run_names: Sequence[str],
    *,
    with_optimizer: bool = False,
    profile: str | None = None,
) -> Manifest:
    """Pack finished runs into one tar archive at path, which is written whole or not at all.

    profile is only recorded in the manifest (the label of the profile whose runs these are).
    """
    path = Path(path)
    _check_archive_path(path)
    names = _exportable(list(dict.fromkeys(run_names)))  # each run once, in the order given
    manifest = Manifest(
        tuple(_describe_run(name, with_optimizer) for name in names),
        profile,
        with_optimizer,
        __version__,
    )
    partial = path.with_name(path.name + ".part")
    try:
        _write_archive(partial, manifest)
        os.replace(partial, path)
    except BaseException:  # a kill (Ctrl-C) too: leave no half archive behind
        partial.unlink(missing_ok=True)
        raise
    return manifest


def _exportable(names: list[str]) -> list[str]:
    """The names, if each is a finished run here; else an error naming those that are not."""
    if not names:
        raise ArchiveError("no runs to export: name at least one run")
    bad = [name for name in names if not is_plain_name(name)]
    if bad:
        raise ArchiveError(f"{', '.join(map(repr, bad))}: not a run name (one plain folder name)")
    course = course_configs()
    problems = [
        f"{name} ({reason})" for name in names if (reason := _not_trained_reason(name, course))
    ]
    if problems:
        raise ArchiveError(
            f"cannot export runs that are not finished in {runs_dir()}: {', '.join(problems)}. "
            "Finish training them first (`python -m tinylm warm` trains a profile's runs, "
            "`python -m tinylm train --run NAME` one run), or leave them out (--runs)."
        )
    return names


def _check_archive_path(path: Path) -> None:
    """Refuse an archive path that cannot take a new file, before any work."""
    if path.is_dir():
        raise ArchiveError(
            f"{path} is a folder: give the archive a file name, e.g. {path}/runs.tar"
        )
    if not path.parent.is_dir():
        raise ArchiveError(f"cannot write {path}: there is no folder {path.parent}")


def _describe_run(name: str, with_optimizer: bool) -> ArchivedRun:
    """The run's manifest entry: its configs and the files it packs, each with size and sha256."""
    folder = run_folder(name)
    wanted = [*MODEL_MEMBERS, *(OPTIMIZER_MEMBERS if with_optimizer else ())]
    missing = [member for member in wanted if not (folder / member).is_file()]
    if missing:
        fix = (
            "export it without --with-optimizer"
            if set(missing) <= set(OPTIMIZER_MEMBERS)
            else f"write its model again with `python -m tinylm train --run {name}`"
        )
        raise ArchiveError(f"cannot export run {name}: {', '.join(missing)} missing; {fix}")
    members = [member for member in (LOG_FILE, *wanted) if (folder / member).is_file()]
    return ArchivedRun(
        name,
        _read_json(folder / "model" / TRAIN_CONFIG_FILE),
        _read_json(folder / "model" / CONFIG_FILE),
        tuple(_describe_file(folder, member) for member in members),
    )


def _read_json(path: Path) -> dict:
    """A JSON object from a run folder's file."""
    return json.loads(path.read_text(encoding="utf-8"))


def _describe_file(folder: Path, member: str) -> ArchivedFile:
    """The file's manifest entry: path in the run folder, size, sha256."""
    path = folder / member
    return ArchivedFile(member, path.stat().st_size, sha256_file(path))


def _write_archive(path: Path, manifest: Manifest) -> None:
    """Write the tar: MANIFEST.json, then every run's files, checked against the manifest."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        text = json.dumps(manifest.to_json(), ensure_ascii=False, indent=2) + "\n"
        data = text.encode("utf-8")
        info = tarfile.TarInfo(MANIFEST_FILE)
        info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
        tar.addfile(info, io.BytesIO(data))
        for run in manifest.runs:
            for file in run.files:
                _add_file(tar, run_folder(run.name) / file.path, f"{MEMBER_ROOT}/{run.name}", file)


def _add_file(tar: tarfile.TarFile, source: Path, prefix: str, file: ArchivedFile) -> None:
    """Add one run file as prefix/path, refusing it if it changed since the manifest was made."""
    info = tarfile.TarInfo(f"{prefix}/{file.path}")
    info.size, info.mode, info.mtime = file.size, 0o644, int(source.stat().st_mtime)
    with open(source, "rb") as f:
        reader = _HashingReader(f)
        tar.addfile(info, reader)
    if reader.digest.hexdigest() != file.sha256:
        raise ArchiveError(
            f"{source} changed while it was exported (is the run training?): export again "
            "once no training runs"
        )


class _HashingReader:
    """A file's reads, hashed on the way: what the tar holds is what the manifest says."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        """Read as the file does, adding what was read to the digest."""
        chunk = self.file.read(size)
        self.digest.update(chunk)
        return chunk


def import_runs(path: str | os.PathLike) -> ImportResult:
    """Check the runs archive at path whole, then install its runs into the runs folder."""
    path = Path(path)
    with _open_archive(path) as tar, _tar_errors_as_damage(path):
        members = iter(tar)
        manifest = _read_manifest(tar, next(members, None), path)
        to_install = _plan_install(manifest, path)
        staging = _staging_folder() if to_install else None
        try:
            unpack = {name: staging / name for name in to_install}
            _unpack_verified(tar, members, manifest, unpack, path)
            for name, staged in unpack.items():
                _install(staged, name)
        finally:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
    present = tuple(run.name for run in manifest.runs if run.name not in to_install)
    return ImportResult(manifest, tuple(to_install), present, runs_dir())


def _open_archive(path: Path) -> tarfile.TarFile:
    """The tar file at path, or an error saying what the file is not."""
    if not path.is_file():
        raise ArchiveError(f"there is no file {path}: give a runs archive ({EXPORT_HINT})")
    try:
        return tarfile.open(path)  # also a runs archive someone compressed (.tar.gz)
    except tarfile.TarError:
        raise ArchiveError(
            f"{path} is not a tar archive, so not a runs archive: {EXPORT_HINT}"
        ) from None


@contextmanager
def _tar_errors_as_damage(path: Path) -> Iterator[None]:
    """Turn a tar cut short or damaged past its start into one error naming the archive."""
    try:
        yield
    except (tarfile.TarError, EOFError) as error:
        raise ArchiveError(
            f"{path} is cut short or damaged ({error}); nothing was imported. Copy the archive "
            "again (or export it again)."
        ) from None


def _read_manifest(tar: tarfile.TarFile, member: tarfile.TarInfo | None, path: Path) -> Manifest:
    """The archive's MANIFEST.json, its first member, refused unless it is this format."""
    if member is None or member.name != MANIFEST_FILE or not member.isreg():
        first = "it is empty" if member is None else f"its first member is {member.name!r}"
        raise ArchiveError(
            f"{path} is a tar archive but not a runs archive: it does not start with "
            f"{MANIFEST_FILE} ({first}); {EXPORT_HINT}"
        )
    if member.size > MAX_MANIFEST_BYTES:
        raise ArchiveError(f"{path}: its {MANIFEST_FILE} is too large for a runs manifest")
    try:
        data = json.loads(tar.extractfile(member).read().decode("utf-8"))
    except ValueError as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ArchiveError(f"{path}: its {MANIFEST_FILE} is not JSON ({error})") from None
    return _parse_manifest(data, path)


def _parse_manifest(data: object, path: Path) -> Manifest:
    """The manifest from its JSON, refused unless it is this format and every entry is sound."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ArchiveError(
            f"{path} is a tar archive with a {MANIFEST_FILE}, but not a runs archive's (its "
            f"format is not {FORMAT!r}); {EXPORT_HINT}"
        )
    if data.get("version") != FORMAT_VERSION:
        raise ArchiveError(
            f"{path} is a runs archive of format version {data.get('version')!r}, which this "
            f"tinylm ({__version__}) cannot read (it reads version {FORMAT_VERSION}): import it "
            f"with the tinylm that wrote it ({data.get('tinylm_version')}), or export it again"
        )
    try:
        runs = tuple(_parse_run(entry) for entry in data["runs"])
        names = [run.name for run in runs]
        _require(len(set(names)) == len(names), "names a run twice")
        manifest = Manifest(runs, data["profile"], data["with_optimizer"], data["tinylm_version"])
        _require(manifest.profile is None or isinstance(manifest.profile, str), "bad profile")
    except (KeyError, TypeError, ValueError) as error:
        raise ArchiveError(
            f"{path}: its {MANIFEST_FILE} is damaged ({type(error).__name__}: {error}); "
            "export the runs again"
        ) from None
    return manifest


def _parse_run(entry: dict) -> ArchivedRun:
    """One run of the manifest's JSON; ValueError if it is not one a runs folder can hold."""
    name = entry["name"]
    _require(is_plain_name(name), f"run name {name!r} is not one plain folder name")
    train_config, model_config = entry["train_config"], entry["model_config"]
    _require(isinstance(train_config, dict) and isinstance(model_config, dict), "bad configs")
    _require(train_config.get("run_name") == name, f"run {name}'s config is another run's")
    files = tuple(ArchivedFile(f["path"], f["size"], f["sha256"]) for f in entry["files"])
    paths = [file.path for file in files]
    _require(len(set(paths)) == len(paths), f"run {name} lists a file twice")
    for file in files:
        _require(file.path in RUN_MEMBERS, f"run {name} lists {file.path!r}, not a run's file")
        _require(type(file.size) is int and file.size >= 0, f"bad size of {file.path}")
        _require(_is_sha256(file.sha256), f"bad sha256 of {file.path}")
    _require(set(MODEL_MEMBERS) <= set(paths), f"run {name} has no complete model/")
    checkpoint = set(OPTIMIZER_MEMBERS) & set(paths)
    _require(checkpoint in (set(), set(OPTIMIZER_MEMBERS)), f"run {name}: checkpoint/ incomplete")
    return ArchivedRun(name, train_config, model_config, files)


def _require(ok: bool, problem: str) -> None:
    """Raise ValueError(problem) unless ok: one check of the manifest."""
    if not ok:
        raise ValueError(problem)


def _is_sha256(text: object) -> bool:
    """True for 64 lowercase hexadecimal digits."""
    return isinstance(text, str) and len(text) == 64 and set(text) <= set("0123456789abcdef")


def _plan_install(manifest: Manifest, path: Path) -> list[str]:
    """The runs to install; the others are here already. Any run that cannot go refuses them all."""
    course = course_configs()
    to_install, problems = [], []
    for run in manifest.runs:
        try:
            if not _already_present(run, course.get(run.name), manifest):
                to_install.append(run.name)
        except ArchiveError as error:
            problems.append(str(error))
    if problems:
        raise ArchiveError(f"nothing was imported from {path}: {' '.join(problems)}")
    return to_install


def _already_present(run: ArchivedRun, course: TrainConfig | None, manifest: Manifest) -> bool:
    """True if the runs folder holds this run already (same configs); False if its place is free.

    Raises ArchiveError if the run cannot be installed: this tinylm defines the run otherwise,
    or its folder holds a run of another config, or a training that has not finished.
    """
    archived = _archived_config(run)
    if course is not None and (changes := config_changes(run.train_config, course)):
        raise ArchiveError(
            f"Run {run.name} was trained with another config than this tinylm "
            f"({__version__}) defines for it ({'; '.join(changes)}), so the notebooks would "
            f"train it again: import it with the tinylm that exported it "
            f"({manifest.tinylm_version})."
        )
    folder = run_folder(run.name)
    saved = saved_config(folder)
    if saved is None:
        _check_free(folder, run.name)
        return False
    differences = config_changes(saved, archived) + _model_changes(folder, run)
    if differences:
        raise ArchiveError(
            f"Run {run.name} is here already with another config (here → archive: "
            f"{'; '.join(differences)}); {folder} is left as it is. Move it away, or import "
            f"into another {RUNS_DIR_ENV}, to take the archive's."
        )
    return True


def _archived_config(run: ArchivedRun) -> TrainConfig:
    """The archive's TrainConfig of the run, refused if this tinylm cannot read it."""
    try:
        return TrainConfig(**run.train_config)
    except (TypeError, ValueError) as error:
        raise ArchiveError(
            f"Run {run.name}'s config is not one this tinylm ({__version__}) can read "
            f"({error}): import it with the tinylm that exported it."
        ) from None


def _model_changes(folder: Path, run: ArchivedRun) -> list[str]:
    """ "model <field> here → archive" for each model config field that differs."""
    try:
        here = _read_json(folder / "model" / CONFIG_FILE)
    except (OSError, ValueError):
        here = {}
    missing = "(not saved)"
    return [
        f"model {key} {here.get(key, missing)} → {run.model_config.get(key, missing)}"
        for key in sorted(here.keys() | run.model_config.keys())
        if here.get(key, missing) != run.model_config.get(key, missing)
    ]


def _check_free(folder: Path, name: str) -> None:
    """Refuse a run folder that holds more than an unused lock: a training not finished."""
    if not folder.exists():
        return
    if not folder.is_symlink() and folder.is_dir():
        if {path.name for path in folder.iterdir()} <= {LOCK_FILE, HOLDER_FILE}:
            return
    raise ArchiveError(
        f"{folder} holds a training of run {name} that has not finished. Finish it "
        f"(`python -m tinylm train --run {name}`), or move the folder away to take the "
        "archive's run, then import again."
    )


def _staging_folder() -> Path:
    """A new temporary folder inside the runs folder, where the archive's runs are unpacked."""
    folder = runs_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=folder))
    except OSError as error:
        if error.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        raise ArchiveError(
            f"cannot write into the runs folder {folder} ({error.strerror}): make it writable, "
            f"or set {RUNS_DIR_ENV} to a folder you can write to, then import again."
        ) from None


def _unpack_verified(
    tar: tarfile.TarFile,
    members: Iterator[tarfile.TarInfo],
    manifest: Manifest,
    unpack: dict[str, Path],
    path: Path,
) -> None:
    """Check every member after the manifest against it; write the runs of unpack to its folders.

    The runs kept as they are (not in unpack) are checked all the same.
    """
    listed = {
        f"{MEMBER_ROOT}/{run.name}/{file.path}": file for run in manifest.runs for file in run.files
    }
    seen: set[str] = set()
    for member in members:
        file = _listed_file(member, listed, seen, path)
        seen.add(member.name)
        _, run_name, relative = member.name.split("/", 2)  # a listed name: runs/<run>/<path>
        target = unpack[run_name] / relative if run_name in unpack else None
        _copy_verified(tar.extractfile(member), target, file, member.name, path)
    missing = [name for name in listed if name not in seen]
    if missing:
        raise ArchiveError(f"{path} is cut short or damaged: {missing[0]} is missing from it")


def _listed_file(
    member: tarfile.TarInfo, listed: dict[str, ArchivedFile], seen: set[str], path: Path
) -> ArchivedFile:
    """The manifest's entry for a member, refusing anything else a tar can hold."""
    if PurePosixPath(member.name).is_absolute() or ".." in member.name.split("/"):
        problem = "a path outside the runs folder, refused"
    elif not member.isreg():
        problem = "a link, folder or device, which a runs archive never holds"
    elif member.name in seen:
        problem = "there twice"
    elif member.name not in listed:
        problem = f"not listed in its {MANIFEST_FILE}"
    elif member.size != listed[member.name].size:
        problem = f"{member.size:,} bytes where {MANIFEST_FILE} says {listed[member.name].size:,}"
    else:
        return listed[member.name]
    raise ArchiveError(
        f"{path} is damaged or not a runs archive: its member {member.name!r} is {problem}; "
        "nothing was imported."
    )


def _copy_verified(
    source: IO[bytes], target: Path | None, file: ArchivedFile, name: str, path: Path
) -> None:
    """Copy a member to target (None: read it only), refusing it unless its sha256 matches."""
    digest = hashlib.sha256()
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
    with open(target or os.devnull, "wb") as out:
        while chunk := source.read(CHUNK_BYTES):
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != file.sha256:
        raise ArchiveError(
            f"{path} is damaged: {name} does not match its sha256 in {MANIFEST_FILE} (the first "
            "damaged file); nothing was imported. Copy the archive again, or export it again."
        )


def _install(staged: Path, name: str) -> None:
    """Rename a run unpacked in the staging folder into place: one atomic step."""
    target = run_folder(name)
    remove_unused_folder(target)  # a folder holding only the lock of a training never begun
    try:
        os.rename(staged, target)
    except OSError as error:
        if error.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
            raise
        raise ArchiveError(
            f"{target} appeared while the archive was imported (a training started?); the "
            "runs before it are installed. Import again to install the rest."
        ) from None
