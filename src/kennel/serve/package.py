"""Where a handler endpoint's model and code are: an entry point and a model folder, a SageMaker ``model.tar.gz``,
or a ``kennel run`` job.

A ``model.tar.gz`` is laid out as SageMaker's PyTorch models are: the model's files at the top, the handlers in
``code/inference.py`` (or the module ``SAGEMAKER_PROGRAM`` names), their requirements in
``code/requirements.txt``. It is unpacked once into the cache, under a key of its content: into a temporary folder
beside its place, then renamed there in one step, so a reader never sees half of it and two servers unpacking the
same archive at once both end up with one whole copy. Members that would land outside the folder (an absolute
path, ``..``, a link pointing out) refuse the archive; devices and pipes too.

A job's ``source/`` folder (what ``kennel run`` ran) holds the handlers and its ``model/`` folder (the script's
``SM_MODEL_DIR``) the model. ``requirements.txt`` is listed at start and never installed: what it names must be
installed already, by the person who decides what runs on this machine.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pydantic import BaseModel

from kennel.errors import UsageError
from kennel.home import cache_dir

PROGRAM_ENV = "SAGEMAKER_PROGRAM"
DEFAULT_PROGRAM = "inference.py"
CODE = "code"
REQUIREMENTS = "requirements.txt"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


class HandlerRef(BaseModel):
    """What a handler endpoint serves, as the command line named it; resolved to files at each load."""

    entry_point: Path | None = None  # the handlers' file; None: ``code/PROGRAM`` of the model folder or archive
    model_dir: Path | None = None  # the model's folder; None with ``package``
    package: Path | None = None  # a model.tar.gz, unpacked at each load (a new archive in its place: the new one)
    program: str = ""  # the module to look for in ``code/``: ``SAGEMAKER_PROGRAM``, else inference.py

    @property
    def name(self) -> str:
        """The endpoint's name when none is given: the archive's, or the model folder's (a job's: the job's)."""
        if self.package is not None:
            name = self.package.name
            return next((name[: -len(s)] for s in ARCHIVE_SUFFIXES if name.endswith(s)), name)
        from kennel.serve.slot import model_name

        return model_name(self.model_dir or Path.cwd())


@dataclass(frozen=True)
class HandlerFiles:
    """The files one load reads: the model folder, the handlers' file (None: every handler the default) and the
    requirements the code lists."""

    model_dir: Path
    entry: Path | None
    requirements: tuple[str, ...] = ()
    requirements_file: Path | None = None


def program_file(program: str = "") -> str:
    """The file of the module the toolkit imports: ``SAGEMAKER_PROGRAM`` (a file or a module name), or
    inference.py."""
    name = program or os.environ.get(PROGRAM_ENV) or DEFAULT_PROGRAM
    return name if name.endswith(".py") else f"{name}.py"


def read_requirements(path: Path) -> tuple[str, ...]:
    """The requirement lines of ``requirements.txt`` (comments and blank lines left out)."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ()
    return tuple(line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip())


def resolve(ref: HandlerRef) -> HandlerFiles:
    """The files ``ref`` names now (an archive is unpacked, or found unpacked in the cache)."""
    model_dir = unpack(ref.package) if ref.package is not None else ref.model_dir
    if model_dir is None:
        raise UsageError("give the model's folder (--model-dir), a model.tar.gz or a kennel run job")
    if not model_dir.is_dir():
        raise UsageError(f"{model_dir}: no such model folder")
    if ref.entry_point is not None:
        entry: Path | None = ref.entry_point
    else:
        candidate = model_dir / CODE / program_file(ref.program)
        named = bool(ref.program or os.environ.get(PROGRAM_ENV))
        if named and not candidate.is_file():
            raise UsageError(f"{candidate}: no such file ({PROGRAM_ENV} or --entry-point names it)")
        entry = candidate if candidate.is_file() else None  # none: the toolkit's defaults, as SageMaker's
    if entry is not None and not entry.is_file():
        raise UsageError(f"{entry}: no such handler file")
    requirements = (entry.parent if entry is not None else model_dir / CODE) / REQUIREMENTS
    listed = requirements.is_file()
    return HandlerFiles(model_dir, entry, read_requirements(requirements), requirements if listed else None)


def job_handlers(job_dir: Path, job_id: str, entry_point: str = "") -> HandlerRef:
    """The handlers in a ``kennel run`` job's source folder and its model folder; an error saying so when the
    source holds no inference script."""
    from kennel.script.contract import ScriptJobDir

    folder = ScriptJobDir(job_dir)
    entry = folder.source / program_file(entry_point)
    if not entry.is_file():
        named = f" (named by {PROGRAM_ENV} or --entry-point)" if entry_point or os.environ.get(PROGRAM_ENV) else ""
        raise UsageError(f"job {job_id} has no inference script to serve: no {entry.name}{named} in {folder.source}")
    return HandlerRef(entry_point=entry, model_dir=folder.model)


# --- model.tar.gz -------------------------------------------------------------------------------------------------


def content_key(path: Path) -> str:
    """A key of the file's content: 16 hex digits of its SHA-256."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def checked_member(member: tarfile.TarInfo, archive: Path) -> None:
    """Refuse a member that would be written outside the folder it is unpacked into, or that is no plain file,
    folder or link inside it."""
    name = PurePosixPath(member.name)
    problem = None
    if member.name.startswith(("/", "\\")) or name.is_absolute() or (len(member.name) > 1 and member.name[1] == ":"):
        problem = "has an absolute path"
    elif ".." in name.parts:
        problem = "climbs out of the archive's folder (..)"
    elif member.issym() or member.islnk():
        target = PurePosixPath(member.linkname)
        base = name.parent if member.issym() else PurePosixPath()
        depth = 0
        for part in (base / target).parts if not target.is_absolute() else ("..",):
            depth += -1 if part == ".." else 0 if part in (".", "") else 1
            if depth < 0:
                break
        if target.is_absolute() or depth < 0:
            problem = f"is a link to {member.linkname}, outside the archive's folder"
    elif not (member.isfile() or member.isdir()):
        problem = "is a device or a pipe"
    if problem:
        raise UsageError(f"{archive}: member {member.name!r} {problem}; the archive is not unpacked")


def unpack(archive: Path, root: Path | None = None) -> Path:
    """The folder ``archive`` unpacks into (``$KENNEL_CACHE/model-packages/KEY``), unpacked now unless it is
    there already."""
    if not archive.is_file():
        raise UsageError(f"{archive}: no such file")
    target = (root or cache_dir() / "model-packages") / content_key(archive)
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                members = tar.getmembers()
                for member in members:
                    checked_member(member, archive)
                tar.extractall(temporary, members=members, filter="data")
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise UsageError(f"{archive}: cannot unpack it ({type(exc).__name__}: {exc})") from None
        try:
            os.rename(temporary, target)
        except OSError:
            if not target.is_dir():  # not another process's copy, landed first: a real failure
                raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return target
