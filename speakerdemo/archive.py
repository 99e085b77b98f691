"""A calibration set from a zip: one folder per person, their clips inside, read in memory.

Nothing is extracted to disk, so no member name can write anywhere; names are still checked, so
that a hostile or broken archive is refused with a reason instead of read half-way. Limits are
checked from the archive's directory before any member is decompressed, and again while reading
(a member may lie about its size).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import PurePosixPath

from .audio import AUDIO_SUFFIXES

MAX_ARCHIVE_BYTES = 200 * 2**20
"""Uncompressed audio in a calibration archive, at most: 10 people x 3 clips of 60 s as 16-bit
48 kHz WAV is 173 MB."""
MAX_MEMBERS = 500
MAX_MEMBER_BYTES = 50 * 2**20  # one clip: the encoder's own limit
ARCHIVES = (".zip", ".tar", ".gz", ".tgz", ".7z", ".rar", ".xz", ".bz2")
IGNORED = ("__MACOSX",)  # folders some zip tools add


class ArchiveError(ValueError):
    """An archive that cannot be used as a calibration set, and why."""


def people_from_zip(source: bytes | str) -> dict[str, list[bytes]]:
    """``{person: [encoded clips]}`` from a zip (its bytes or its path) laid out as
    ``<person>/<clip>.wav`` (any of AUDIO_SUFFIXES), folders in any order.

    Raises ArchiveError for anything else: not a zip, empty, too large or too many files, nested
    archives, files that are not audio, clips outside a person's folder, names that climb out of
    the archive (``..``, absolute paths).
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source)
    except (zipfile.BadZipFile, OSError) as err:
        raise ArchiveError(f"Not a readable zip file ({err}).") from None
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir() and not _ignored(m.filename)]
        if not members:
            raise ArchiveError("The zip holds no files: put each person's clips in a folder named after them.")
        if len(members) > MAX_MEMBERS:
            raise ArchiveError(f"The zip holds {len(members)} files; at most {MAX_MEMBERS} are read.")
        total = sum(m.file_size for m in members)
        if total > MAX_ARCHIVE_BYTES:
            raise ArchiveError(f"The zip unpacks to {total / 2**20:.0f} MB; at most {MAX_ARCHIVE_BYTES // 2**20} MB.")
        people: dict[str, list[bytes]] = {}
        for member in members:
            person = _person(member.filename)
            people.setdefault(person, []).append(_read(archive, member))
        return people


def _ignored(name: str) -> bool:
    parts = PurePosixPath(name).parts
    return bool(parts) and (parts[0] in IGNORED or parts[-1].startswith("."))


def _person(name: str) -> str:
    """The person a member belongs to: its folder. Refuses what is not ``person/clip.<audio>``."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts:
        raise ArchiveError(f"{name!r}: a path that leaves the archive is refused.")
    suffix = path.suffix.lower()
    if suffix in ARCHIVES:
        raise ArchiveError(f"{name!r}: archives inside the archive are not read; unpack it into the folders.")
    if suffix not in AUDIO_SUFFIXES:
        raise ArchiveError(f"{name!r} is not an audio file ({', '.join(AUDIO_SUFFIXES)}).")
    if len(path.parts) != 2:
        raise ArchiveError(
            f"{name!r}: each clip must lie in a folder named after its person, one level deep (Ann/clip1.wav)."
        )
    return path.parts[0]


def _read(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> bytes:
    """A member's bytes, never more than MAX_MEMBER_BYTES whatever its header says."""
    if member.file_size > MAX_MEMBER_BYTES:
        raise ArchiveError(f"{member.filename!r} is {member.file_size / 2**20:.0f} MB; a clip may be at most 50 MB.")
    try:
        with archive.open(member) as f:
            data = f.read(MAX_MEMBER_BYTES + 1)
    except (zipfile.BadZipFile, OSError, NotImplementedError, RuntimeError) as err:
        raise ArchiveError(f"{member.filename!r} cannot be read ({err}).") from None
    if len(data) > MAX_MEMBER_BYTES:
        raise ArchiveError(f"{member.filename!r} unpacks to more than 50 MB.")
    return data
