"""Rewriting a checkpoint folder (calibrate, export, evaluate --calibrate) keeps its documents."""

from pathlib import Path

from speakerdemo.encoder import SpeakerEncoder
from train.checkpoints import DOCUMENTS, atomic_save_pretrained


def test_rewriting_a_checkpoint_keeps_its_card_and_experiments(tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    encoder = SpeakerEncoder(encoder={"name": "ecapa_tdnn", "channels": 32})
    atomic_save_pretrained(encoder, folder)
    texts = {name: f"# {name}\nwritten by hand\n" for name in DOCUMENTS}
    for name, text in texts.items():
        (folder / name).write_text(text)
    (folder / "stale.bin").write_bytes(b"left from an older save")

    atomic_save_pretrained(encoder, folder)

    assert {name: (folder / name).read_text() for name in DOCUMENTS} == texts
    assert not (folder / "stale.bin").exists()  # the folder is the new save, not a merge
    assert SpeakerEncoder.from_pretrained(folder, device="cpu").encoder_config == encoder.encoder_config
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary folder left behind
