"""Front end: shapes, the HW4 preset, normalisation and batching invariance."""

import numpy as np
import pytest
import torch
import torchaudio

from speakerdemo.audio import SAMPLE_RATE
from speakerdemo.features import FrontEnd, frontend_config, pad_frames, peak_normalize, trim_silence


def _tone(seconds=1.0, sr=SAMPLE_RATE, freq=220.0, amp=0.3):
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_hw4_preset_parameters_and_shape():
    cfg = frontend_config("hw4")
    assert (cfg.n_mels, cfg.n_fft, cfg.hop_length, cfg.f_min, cfg.log_offset) == (40, 400, 160, 50.0, 1e-9)
    assert cfg.peak_db == -3.0 and cfg.trim_silence and cfg.normalize == "none"
    fe = FrontEnd(cfg)
    feats, mask = fe(torch.from_numpy(_tone(2.0)).unsqueeze(0))
    assert feats.shape == (1, 1 + 32000 // 160, 40)
    assert mask.all()


def test_hw4_features_equal_wav2mel_reference():
    # The reference wav2mel: MelSpectrogram(sr 16k, n_fft 400, hop 160, 40 mels, f_min 50), log(x + 1e-9).
    wav = _tone(1.0)
    reference = torchaudio.transforms.MelSpectrogram(16000, n_fft=400, hop_length=160, n_mels=40, f_min=50)
    expected = torch.log(reference(torch.from_numpy(wav)) + 1e-9).T
    feats, _ = FrontEnd(frontend_config("hw4"))(torch.from_numpy(wav).unsqueeze(0))
    torch.testing.assert_close(feats[0], expected)


def test_peak_normalisation_to_minus_3_db():
    out = peak_normalize(_tone(amp=0.1), -3.0)
    assert np.max(np.abs(out)) == pytest.approx(10 ** (-3 / 20), rel=1e-5)


def test_trim_silence_drops_long_quiet_runs_and_keeps_short_ones():
    sr = SAMPLE_RATE
    silence_long, silence_short = np.zeros(int(0.5 * sr), np.float32), np.zeros(int(0.05 * sr), np.float32)
    wav = np.concatenate([silence_long, _tone(0.4), silence_short, _tone(0.4), silence_long])
    kept = trim_silence(wav, sr)
    # The two tones and the 50 ms gap survive (give or take the 20 ms RMS window); 1 s of silence goes.
    assert abs(len(kept) - int(0.85 * sr)) < 0.03 * sr
    assert kept[0] >= int(0.48 * sr)


def test_mean_normalisation_zeroes_the_mean():
    feats, _ = FrontEnd(frontend_config("default"))(torch.from_numpy(_tone()).unsqueeze(0))
    torch.testing.assert_close(feats.mean(dim=1), torch.zeros(1, 80), atol=1e-4, rtol=0)
    noisy = _tone() + 0.01 * np.random.default_rng(0).standard_normal(SAMPLE_RATE).astype(np.float32)
    feats, _ = FrontEnd(frontend_config("default", normalize="meanvar"))(torch.from_numpy(noisy).unsqueeze(0))
    torch.testing.assert_close(feats.std(dim=1), torch.ones(1, 80), atol=1e-3, rtol=0)


def test_padded_batch_equals_single_features():
    """Utterances of different lengths are featurised one by one and batched by pad_frames: each keeps
    its own features, the padding is zero and masked out."""
    fe = FrontEnd()
    alone = [fe(torch.from_numpy(w).unsqueeze(0))[0][0] for w in (_tone(0.7), _tone(1.3, freq=440))]
    feats, mask = pad_frames(alone)
    n = alone[0].shape[0]
    assert n == 1 + int(0.7 * SAMPLE_RATE) // 160
    assert feats.shape == (2, alone[1].shape[0], 80)
    assert mask[0].sum() == n and mask[1].all()
    torch.testing.assert_close(feats[0, :n], alone[0])
    torch.testing.assert_close(feats[1], alone[1])
    assert torch.all(feats[0, n:] == 0)


def test_unknown_preset():
    with pytest.raises(ValueError, match="choose one of"):
        frontend_config("mfcc")
