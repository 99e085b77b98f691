"""train/sources.py: the one table of data sources, as config validation, the data stage and the
cohort read it; and its Kaldi data dir reader, on real speechocean762 clips and on bad input."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import write_voices
from train_helpers import fit_args, logging_restored, metric_rows

from speakerdemo.audio import SAMPLE_RATE
from train import cohort, config, prepare
from train.__main__ import main
from train.config import ConfigError, load_config, source_settings
from train.data import AudioStore, DataError, kaldi_source
from train.prepare import load_source
from train.sources import SOURCES


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    with logging_restored():
        yield


def kaldi_dir(folder: Path, wav_scp: str, utt2spk: str) -> Path:
    """A Kaldi data dir holding the two given files."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "wav.scp").write_text(wav_scp)
    (folder / "utt2spk").write_text(utt2spk)
    return folder


# ----------------------------------------------------------------------------- one table
def test_no_other_module_branches_on_a_source_type_name() -> None:
    """The type names live in the table; config, the data stage and the cohort ask its entries."""
    for module in (config, prepare, cohort):
        source = inspect.getsource(module)
        for name in SOURCES:
            assert f'"{name}"' not in source and f"'{name}'" not in source, (module.__name__, name)


def test_the_table_drives_config_validation() -> None:
    assert source_settings({"type": "kaldi", "root": "data/train"}) == {
        "type": "kaldi",
        "audio_root": None,
        "hold_out_speakers": 0,
        "repeats": 1,
        "root": "data/train",
    }
    with pytest.raises(ConfigError, match="A kaldi source needs \\['root'\\]"):
        source_settings({"type": "kaldi"})
    with pytest.raises(ConfigError, match="\\['wav_scp'\\] do not apply to a kaldi source; it takes \\['audio_root'"):
        source_settings({"type": "kaldi", "root": "d", "wav_scp": "d/wav.scp"})
    with pytest.raises(ConfigError, match="Unknown source type 'sphere'; choose one of \\['folder', 'manifest'"):
        source_settings({"type": "sphere", "root": "d"})


# ----------------------------------------------------------------------------- Kaldi, real clips
def test_a_kaldi_dir_of_real_clips_trains(
    tmp_path: Path, speech_clips: dict[str, list[Path]], shared_data: Path
) -> None:
    """wav.scp names the shared speechocean762 clips in place (absolute paths inside audio_root):
    the config resolves, load_source reads them with their utt2spk speakers, and a run trains on them."""
    corpus = shared_data / "speechocean762"
    ids = dict(sorted((f"{s}-{clip.stem}", (s, clip)) for s, clips in speech_clips.items() for clip in clips))
    data = kaldi_dir(
        tmp_path / "data" / "train",
        "".join(f"{utt} {clip}\n" for utt, (_, clip) in ids.items()),
        "".join(f"{utt} {speaker}\n" for utt, (speaker, _) in ids.items()),
    )
    spec = {"type": "kaldi", "root": str(data), "audio_root": str(corpus)}
    cfg = load_config(None, [f"data.sources=[{spec}]"])
    utts, held = load_source(cfg["data"]["sources"][0], cfg["seed"])
    assert held == [] and [(u.speaker, u.file) for u in utts] == [(s, c.resolve()) for s, c in ids.values()]
    store = AudioStore(utts, preload=True)
    assert store.readable == {str(u.file) for u in utts}
    assert all(len(store.get(str(u.file))) >= 4 * SAMPLE_RATE for u in utts)  # the 4-8 s clips, decoded

    run_dir = tmp_path / "run"
    assert main(fit_args(run_dir, [spec], steps=2)) == 0
    assert [row["step"] for row in metric_rows(run_dir)] == [1, 2]
    split = (run_dir / "split.csv").read_text()
    assert all(f",{corpus}" in line for line in split.splitlines()[1:])

    with pytest.raises(DataError, match="outside the data root"):  # without audio_root: the data dir
        load_source(source_settings({"type": "kaldi", "root": str(data)}), seed=0)


# ----------------------------------------------------------------------------- Kaldi, generated clips
def test_wav_scp_paths_are_relative_to_the_data_dir_by_default(tmp_path: Path) -> None:
    write_voices(tmp_path / "wav", ["alice", "bob"], clips=2, sessions=False)
    data = kaldi_dir(
        tmp_path,
        "a0 wav/alice/c0.wav\na1 wav/alice/c1.wav\n\nb0 wav/bob/c0.wav\n",
        "b0 bob\na1 alice\na0 alice\n",
    )
    utts = kaldi_source(data, data)
    assert [(u.speaker, u.path) for u in utts] == [
        ("alice", "wav/alice/c0.wav"),
        ("alice", "wav/alice/c1.wav"),
        ("bob", "wav/bob/c0.wav"),
    ]
    assert all(u.file.is_file() for u in utts)
    cfg = load_config(None, [f"data.sources=[{{type: kaldi, root: {data}, hold_out_speakers: 1}}]"])
    kept, held = load_source(cfg["data"]["sources"][0], seed=0)
    assert len({u.speaker for u in kept}) == len({u.speaker for u in held}) == 1


@pytest.mark.parametrize(
    ("wav_scp", "utt2spk", "message"),
    [
        ("a0 sox a.flac -t wav - |\n", "a0 alice\n", "wav.scp:1: 'sox a.flac -t wav - \\|' is a piped command"),
        ("a0 -\n", "a0 alice\n", "wav.scp:1: '-' is a piped command"),
        ("a0 raw.ark:1234\n", "a0 alice\n", "wav.scp:1: 'raw.ark:1234' is an offset into a Kaldi archive"),
        ("a0 a.wav\na1\n", "a0 alice\n", "wav.scp:2: expected 'utterance-id path', got 'a1'"),
        ("a0 my clip.wav\n", "a0 alice\n", "wav.scp:1: expected 'utterance-id path' \\(a path without spaces\\)"),
        ("a0 a.wav\n\na0 b.wav\n", "a0 alice\n", "wav.scp:3: utterance 'a0' is listed again \\(first on line 1\\)"),
        ("a0 a.wav\na1 b.wav\n", "a0 alice\n", "wav.scp:2: utterance 'a1' is missing from .*utt2spk"),
        ("a0 a.wav\n", "a0 alice\nzz bob\n", "utt2spk:2: utterance 'zz' is missing from .*wav.scp \\(1 such\\)"),
        ("a0 a.wav\n", "a0 alice bob\n", "utt2spk:1: expected 'utterance-id speaker-id'"),
        ("a0 a.wav\n", "a0 alice\na0 bob\n", "utt2spk:2: utterance 'a0' is listed again"),
        ("a0 ../../etc/passwd\n", "a0 alice\n", "outside the data root"),
        ("a0 /etc/passwd\n", "a0 alice\n", "outside the data root"),
        ("\n", "\n", "wav.scp lists no utterances"),
    ],
)
def test_bad_kaldi_dirs_are_refused_with_the_file_and_line(
    tmp_path: Path, wav_scp: str, utt2spk: str, message: str
) -> None:
    data = kaldi_dir(tmp_path / "data", wav_scp, utt2spk)
    with pytest.raises(DataError, match=message):
        load_source(source_settings({"type": "kaldi", "root": str(data)}), seed=0)


def test_kaldi_dirs_without_their_files_or_with_segments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        kaldi_source(tmp_path / "nowhere", tmp_path)
    (tmp_path / "wav.scp").write_text("a0 a.wav\n")
    with pytest.raises(DataError, match="utt2spk is missing: a Kaldi data dir needs wav.scp and utt2spk"):
        kaldi_source(tmp_path, tmp_path)
    (tmp_path / "utt2spk").write_text("a0 alice\n")
    (tmp_path / "segments").write_text("a0 rec0 0.0 1.5\n")
    with pytest.raises(DataError, match="segments: utterances cut out of recordings are not supported"):
        kaldi_source(tmp_path, tmp_path)
