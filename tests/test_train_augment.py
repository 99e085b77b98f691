"""train/augment.py: waveform augmentation, the phone line and SpecAugment, and which of them a
config switches on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import VOICES, voiced, write_voices

from speakerdemo.audio import SAMPLE_RATE
from train.augment import AugmentConfig, Augmenter, SpecAugment, mix_at_snr, telephone
from train.config import DEFAULTS, load_config
from train.data import AudioStore, CropDataset, babble_source, folder_source, label_map, random_crop


def augment_config(**settings: object) -> AugmentConfig:
    """An ``augment`` section as load_config resolves it: ``settings`` over the defaults."""
    return AugmentConfig(**{**DEFAULTS["augment"], **settings})


@pytest.fixture
def two_voices(tmp_path: Path) -> tuple[list, AudioStore]:
    write_voices(tmp_path, ["alice", "bob"], clips=3)
    utts = folder_source(tmp_path)
    return utts, AudioStore(utts, preload=True)


def test_augmenter_output_has_the_crop_length_and_stays_in_range(two_voices: tuple) -> None:
    utts, store = two_voices
    config = augment_config(
        prob=1.0,
        coloured_noise=True,
        babble=True,
        simulated_rirs=3,
        reverb_prob=0.7,
        speeds=[0.9, 1.1],
        speed_prob=0.5,
        gain_db=12.0,
    )
    crop = 8000
    augmenter = Augmenter(config, SAMPLE_RATE, babble_source(store, utts, int(crop * 1.2)), seed=0)
    assert len(augmenter.rirs) == 3
    speeds = set()
    for i in range(40):
        rng = np.random.default_rng(i)
        clean = random_crop(store.get(str(utts[i % len(utts)].file)), int(np.ceil(crop * augmenter.length_factor)), rng)
        wav, speed = augmenter(clean, crop, rng)
        speeds.add(speed)
        assert wav.shape == (crop,) and wav.dtype == np.float32
        assert np.isfinite(wav).all() and 0 < np.max(np.abs(wav)) <= 1.0
        assert not np.allclose(wav, clean[:crop])
    assert speeds == {0, 1, 2}


@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 13.0])
def test_mix_at_snr_hits_the_requested_snr(snr_db: float) -> None:
    rng = np.random.default_rng(0)
    f0, formant = VOICES["bob"]
    speech = voiced(1.0, f0=f0, formant=formant, noise=0.01, seed=rng)
    noise = 3.0 * rng.standard_normal(SAMPLE_RATE).astype(np.float32)
    added = mix_at_snr(speech, noise, snr_db) - speech
    measured = 10 * np.log10(np.mean(speech.astype(np.float64) ** 2) / np.mean(added.astype(np.float64) ** 2))
    assert measured == pytest.approx(snr_db, abs=0.01)


def test_telephone_keeps_the_band_below_4_khz_and_mu_law_costs_about_38_db() -> None:
    """White noise through the phone line: the length stays, nothing above 4.2 kHz survives, the band
    below 3.5 kHz passes whole, and 8-bit mu-law adds noise at G.711's ~38 dB SNR (hand value)."""
    x = (0.3 * np.random.default_rng(0).standard_normal(SAMPLE_RATE)).astype(np.float32)
    freqs = np.fft.rfftfreq(SAMPLE_RATE, 1 / SAMPLE_RATE)
    power_in = np.abs(np.fft.rfft(x)) ** 2
    line = telephone(x, SAMPLE_RATE, mu_law=False)
    coded = telephone(x, SAMPLE_RATE, mu_law=True)
    for y in (line, coded):
        assert y.shape == x.shape and y.dtype == np.float32
        power = np.abs(np.fft.rfft(y)) ** 2
        assert power[freqs > 4200].sum() < 1e-4 * power.sum()
        assert power[freqs < 3500].sum() / power_in[freqs < 3500].sum() == pytest.approx(1.0, abs=0.01)
    snr = 10 * np.log10(np.mean(line**2) / np.mean((line - coded) ** 2))
    assert 35 < snr < 41


def test_speeds_as_speakers_offset_labels_by_speaker_count_per_speed(two_voices: tuple) -> None:
    utts, store = two_voices
    labels = label_map(utts)
    config = augment_config(
        prob=0.0,
        coloured_noise=False,
        babble=False,
        speeds=[0.9, 1.1],
        speed_prob=0.7,
        speeds_as_speakers=True,
        gain_db=0.0,
    )
    augmenter = Augmenter(config, SAMPLE_RATE)
    dataset = CropDataset(utts, labels, store, 0.5, augmenter, repeats=[5] * len(utts), speeds_as_speakers=True, seed=5)
    seen = set()
    for i in range(len(dataset)):
        utt = dataset.utts[dataset.index[i]]
        rng = np.random.default_rng((5, 0, i))
        clean = random_crop(store.get(str(utt.file)), int(np.ceil(dataset.crop_samples * 1.1)), rng)
        _, speed = augmenter(clean, dataset.crop_samples, rng)
        wav, label = dataset[i]
        assert label == labels[utt.speaker] + speed * len(labels)
        assert wav.shape == (dataset.crop_samples,)
        seen.add(speed)
    assert seen == {0, 1, 2}


def test_spec_augment_masks_only_in_training_mode() -> None:
    specaug = SpecAugment(freq_mask=10, time_mask=20, prob=1.0)
    feats = torch.randn(4, 100, 40) + 5.0
    torch.manual_seed(0)
    masked = specaug(feats)
    assert masked.shape == feats.shape
    assert (masked == 0).any() and ((masked == feats) | (masked == 0)).all()
    specaug.eval()
    assert torch.equal(specaug(feats), feats)


# ----------------------------------------------------------------------------- what a config switches on
@pytest.mark.parametrize(
    ("augment", "on"),
    [
        ("{}", []),
        ("{prob: 0.9, reverb_prob: 1.0, speed_prob: 1.0, spec_prob: 1.0, speeds_as_speakers: true}", []),
        ("{gain_db: 6.0}", ["gain_db"]),
        ("{babble: true, prob: 0.6}", ["babble"]),
        ("{speeds: [0.9, 1.1], telephone_prob: 0.2}", ["speeds", "telephone_prob"]),
        (
            "{prob: 0.0, coloured_noise: false, babble: false, gain_db: 0.0, spec_freq_mask: 0, spec_time_mask: 0, "
            "spec_prob: 0.0}",
            [],
        ),
    ],
)
def test_each_augmentation_is_off_unless_its_own_setting_names_it(augment: str, on: list[str]) -> None:
    """Naming one setting switches on that component only; settings that only parameterise a
    component switch on nothing, and the shipped checkpoint's old command means no augmentation."""
    config = AugmentConfig(**load_config(None, [f"augment={augment}"])["augment"])
    assert config.waveform_components() == on
    assert (config.spec_freq_mask, config.spec_time_mask) == (0, 0)


def test_spec_augment_without_masks_leaves_features_and_the_global_generator_alone() -> None:
    """Off means off: no masks and no draw from the generator that dropout shares."""
    specaug = SpecAugment(freq_mask=0, time_mask=0, prob=0.6)
    feats = torch.randn(4, 100, 40)
    torch.manual_seed(3)
    assert torch.equal(specaug(feats), feats)
    after = torch.rand(1)
    torch.manual_seed(3)
    assert torch.equal(after, torch.rand(1))
