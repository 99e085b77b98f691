"""speakerdemo.archive: calibration zips read in memory, and every kind of bad zip refused with a reason."""

from __future__ import annotations

import io
import zipfile

import pytest

from speakerdemo.archive import MAX_MEMBERS, ArchiveError, people_from_zip


def make_zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_one_folder_per_person():
    data = make_zip(
        {"Ann/1.wav": b"a1", "Ann/2.ogg": b"a2", "Bo/x.flac": b"b", "__MACOSX/Ann/._1.wav": b"", "Bo/.DS_Store": b""}
    )
    assert people_from_zip(data) == {"Ann": [b"a1", b"a2"], "Bo": [b"b"]}


@pytest.mark.parametrize(
    ("files", "words"),
    [
        ({}, "holds no files"),
        ({"Ann/notes.txt": b"x"}, "is not an audio file"),
        ({"Ann/more.zip": make_zip({"Bo/1.wav": b"b"})}, "archives inside the archive"),
        ({"../evil/1.wav": b"x"}, "leaves the archive"),
        ({"/abs/1.wav": b"x"}, "leaves the archive"),
        ({"clip.wav": b"x"}, "folder named after its person"),
        ({"Ann/sub/1.wav": b"x"}, "one level deep"),
        ({f"Ann/{i}.wav": b"" for i in range(MAX_MEMBERS + 1)}, "at most 500"),
    ],
)
def test_bad_zips_are_refused(files, words):
    with pytest.raises(ArchiveError, match=words):
        people_from_zip(make_zip(files))


def test_not_a_zip_and_a_bomb():
    with pytest.raises(ArchiveError, match="Not a readable zip"):
        people_from_zip(b"RIFF....WAVE")
    bomb = make_zip({"Ann/big.wav": bytes(210 * 2**20)})  # compresses to a few hundred kB
    assert len(bomb) < 2**20
    with pytest.raises(ArchiveError, match="unpacks to 210 MB"):
        people_from_zip(bomb)
