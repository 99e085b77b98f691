"""SpeakerEncoder: embedding invariants, windows, save/load round trips, refusals."""

import json
import pickle

import numpy as np
import pytest
from conftest import tiny_encoder, voiced

import speakerdemo.audio as audio_module
import speakerdemo.encoder as encoder_module
from speakerdemo import AudioError, CheckpointError, SpeakerEncoder
from speakerdemo.audio import MIN_SPEECH_SECONDS, SAMPLE_RATE
from speakerdemo.encoder import SPEECH_COLLAR_SECONDS
from speakerdemo.scoring import Calibration

SR = SAMPLE_RATE


@pytest.fixture(scope="module")
def encoder():
    return tiny_encoder(64, head={"name": "aam_softmax"}, classes=["a", "b", "c"])


def test_embedding_fields(encoder):
    emb = encoder.embed(voiced(2.0), SR)
    assert emb.vector.shape == (192,) and emb.vector.dtype == np.float32
    assert np.linalg.norm(emb.vector) == pytest.approx(1.0, abs=1e-5)
    frames = 1 + 2 * SR // 160
    assert emb.attention.shape == emb.frame_times.shape == emb.speech_mask.shape == (frames,)
    assert emb.mel.shape == (frames, 80)
    assert emb.attention.sum() == pytest.approx(1.0, abs=1e-5)
    assert emb.frame_times[1] - emb.frame_times[0] == pytest.approx(0.01)
    assert emb.duration_seconds == pytest.approx(2.0)
    assert 1.5 < emb.speech_seconds <= 2.01
    assert emb.class_logits is None  # only computed when asked for (identification)


def test_the_vad_runs_once_per_clip(encoder, monkeypatch):
    calls = []
    real = audio_module.analyse_speech  # every VAD pass (detect_speech too) goes through it

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(audio_module, "analyse_speech", counted)
    monkeypatch.setattr(encoder_module, "analyse_speech", counted)
    encoder.embed_batch([(SR, voiced(1.0)), (SR, voiced(2.0, seed=1))])
    assert len(calls) == 2


@pytest.mark.parametrize("seconds", [0.4, 0.45, 0.48, 0.5, 0.52, 0.55, 0.6])
def test_the_speech_gate_and_the_embedding_count_speech_alike(encoder, seconds):
    """Near the 0.5 s gate: a clip is refused exactly when its embedding would report under 0.5 s."""
    wav = np.concatenate([np.zeros(SR, np.float32), voiced(seconds), np.zeros(SR, np.float32)])
    found = encoder.embed(wav, SR, min_speech_seconds=0.0).speech_seconds
    if found < MIN_SPEECH_SECONDS:
        with pytest.raises(AudioError, match=f"Only {found:.2f} s of speech detected"):
            encoder.embed(wav, SR)
    else:
        assert encoder.embed(wav, SR).speech_seconds == found


def test_silence_gets_no_attention_and_does_not_change_the_embedding(encoder):
    speech = voiced(1.5)
    padded = np.concatenate([np.zeros(SR, np.float32), speech, np.zeros(2 * SR, np.float32)])
    a, b = encoder.embed(speech, SR), encoder.embed(padded, SR)
    # Long silences get no weight; a collar of context around the speech is kept.
    collar = SPEECH_COLLAR_SECONDS + 0.05
    assert b.attention[b.frame_times < 1.0 - collar].sum() == 0
    assert b.attention[b.frame_times > 2.5 + collar].sum() == 0
    assert b.speech_seconds == pytest.approx(a.speech_seconds, abs=0.1)
    # Speech frames at the edges differ by a few frames of context; the vectors stay very close.
    assert encoder.score(a, b) > 0.95


def test_batch_equals_one_by_one(encoder):
    clips = [(SR, voiced(s, f0=f0, seed=seed)) for s, f0, seed in [(1.0, 110, 1), (3.5, 180, 2), (2.2, 140, 3)]]
    batched = encoder.embed_batch(clips)
    for clip, emb in zip(clips, batched):
        np.testing.assert_allclose(encoder.embed(clip).vector, emb.vector, atol=1e-5)


@pytest.mark.parametrize("max_batch_frames", [None, 200, 48000])
def test_batch_size_bound_does_not_change_embeddings(encoder, max_batch_frames):
    """Whatever the batches (one window each at 200 frames, all together at 48,000, the device's
    default otherwise), padding and grouping leave every embedding as it is alone."""
    clips = [
        (SR, voiced(s, f0=f0, seed=seed)) for s, f0, seed in [(1.0, 110, 1), (3.5, 180, 2), (2.2, 140, 3), (1.2, 95, 4)]
    ]
    batched = encoder.embed_batch(clips, max_batch_frames=max_batch_frames)
    for clip, emb in zip(clips, batched):
        np.testing.assert_allclose(encoder.embed_batch([clip], max_batch_frames=1)[0].vector, emb.vector, atol=1e-5)


def test_long_clip_is_windowed_and_averaged(encoder):
    wav = voiced(9.0, seed=4)
    windowed = SpeakerEncoder(
        encoder=encoder.encoder_config, head=encoder.head_config, classes=encoder.classes, window_seconds=3.0
    )
    windowed.load_state_dict(encoder.state_dict())
    windowed.eval()
    whole, parts = encoder.embed(wav, SR), windowed.embed(wav, SR)
    assert parts.attention.shape == whole.attention.shape
    assert parts.attention.sum() == pytest.approx(1.0, abs=1e-5)
    assert windowed.score(whole, parts) > 0.9


def test_save_load_round_trip_gives_identical_embeddings(encoder, tmp_path):
    encoder.calibration = Calibration.from_scores(
        np.r_[np.linspace(0.3, 0.9, 50), np.linspace(-0.2, 0.5, 50)], np.r_[np.ones(50), np.zeros(50)], trials="toy"
    )
    encoder.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["encoder"]["channels"] == 64 and config["classes"] == ["a", "b", "c"]
    assert config["calibration"]["trials"] == "toy"
    loaded = SpeakerEncoder.from_pretrained(tmp_path, device="cpu")
    wav = voiced(2.0, seed=5)
    np.testing.assert_array_equal(loaded.embed(wav, SR).vector, encoder.embed(wav, SR).vector)
    assert loaded.threshold == pytest.approx(encoder.calibration.threshold, abs=1e-6)
    encoder.calibration = None


def test_classify_returns_top_k_probabilities(encoder):
    emb = encoder.embed(voiced(1.0), SR, class_logits=True)
    assert emb.class_logits.shape == (3,)
    top = encoder.classify(emb, top_k=2)
    assert [name for name, _ in top] != [] and len(top) == 2
    assert all(0 <= p <= 1 for _, p in top) and top[0][1] >= top[1][1]


def test_bad_audio_is_an_audio_error(encoder):
    with pytest.raises(AudioError, match="silent"):
        encoder.embed(np.zeros(SR, np.float32), SR)
    with pytest.raises(AudioError, match="Clip 2"):
        encoder.embed_batch([(SR, voiced(1.0)), (SR, np.full(SR, np.nan, np.float32))])


def test_refuses_bad_checkpoints(encoder, tiny_checkpoint, tmp_path):
    with pytest.raises(CheckpointError, match="config.json"):
        SpeakerEncoder.from_pretrained(tmp_path)
    encoder.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="safetensors"):
        SpeakerEncoder.from_pretrained(tmp_path)
    weights.write_bytes(pickle.dumps({"model": [1, 2, 3]}))
    with pytest.raises(CheckpointError, match="safetensors"):
        SpeakerEncoder.from_pretrained(tmp_path)
    other = tiny_checkpoint(32)
    weights.write_bytes((other / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="does not match"):
        SpeakerEncoder.from_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        SpeakerEncoder.from_pretrained(tmp_path / "missing")


def test_classify_adds_speed_copies_to_their_speaker(encoder):
    model = SpeakerEncoder(encoder=encoder.encoder_config, head=encoder.head_config, classes=["a", "b", "a@0.9"])
    emb = encoder.embed(voiced(1.0), SR)
    emb.class_logits = np.log(np.array([0.25, 0.45, 0.3], dtype=np.float32))
    assert model.classify(emb) == [("a", pytest.approx(0.55)), ("b", pytest.approx(0.45))]
    emb.class_logits = np.log(np.array([0.1, 0.6, 0.3], dtype=np.float32))
    assert [name for name, _ in model.classify(emb, top_k=1)] == ["b"]


def test_collar_keeps_the_mask_length_and_widens_speech():
    from speakerdemo.encoder import with_collar

    short = np.zeros(10, dtype=bool)
    short[4] = True
    assert with_collar(short, 30).tolist() == [True] * 10  # shorter than the collar: all pooled
    mask = np.zeros(20, dtype=bool)
    mask[10] = True
    assert np.flatnonzero(with_collar(mask, 2)).tolist() == [8, 9, 10, 11, 12]
