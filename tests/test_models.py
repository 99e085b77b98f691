"""Encoders: padding-mask invariance, attention weights, registry."""

import pytest
import torch

from speakerdemo.models import ENCODERS, build_encoder

SMALL = {
    "transformer": {"n_mels": 40},
    "conformer": {"n_mels": 80, "dim": 64, "num_layers": 2},
    "ecapa_tdnn": {"n_mels": 80, "channels": 64},
    "resnet34": {"n_mels": 80, "width": 8},
    "res2net50": {"n_mels": 80, "width": 8},
    "ensemble": {
        "n_mels": 80,
        "members": [{"name": "ecapa_tdnn", "channels": 32}, {"name": "ecapa_tdnn", "channels": 48}],
    },
}


def _padded_batch(model, n_mels):
    torch.manual_seed(0)
    short, long = torch.randn(1, 37, n_mels), torch.randn(1, 90, n_mels)
    batch = torch.zeros(2, 90, n_mels)
    batch[0, :37], batch[1] = short[0], long[0]
    mask = torch.zeros(2, 90, dtype=torch.bool)
    mask[0, :37], mask[1] = True, True
    # Garbage in the padding must not matter either.
    batch[0, 37:] = 100.0
    with torch.inference_mode():
        alone = model(short, torch.ones(1, 37, dtype=torch.bool))
        padded = model(batch, mask)
    return alone, padded


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_padding_does_not_change_embedding(name):
    cfg = SMALL[name]
    model = build_encoder(name, **cfg).eval()
    alone, padded = _padded_batch(model, cfg["n_mels"])
    torch.testing.assert_close(padded.embedding[0], alone.embedding[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(padded.weights[0, :37], alone.weights[0], atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_attention_sums_to_one_and_is_zero_on_padding(name):
    cfg = SMALL[name]
    model = build_encoder(name, **cfg).eval()
    _, padded = _padded_batch(model, cfg["n_mels"])
    assert padded.weights.shape == (2, 90)
    torch.testing.assert_close(padded.weights.sum(dim=1), torch.ones(2))
    assert torch.all(padded.weights[0, 37:] == 0)
    assert torch.all(padded.weights >= 0)


def test_mean_pooling_weights_are_uniform():
    model = build_encoder("transformer", n_mels=40).eval()
    _, padded = _padded_batch(model, 40)
    torch.testing.assert_close(padded.weights[0, :37], torch.full((37,), 1 / 37))


def test_ecapa_presets_have_paper_widths():
    small = build_encoder("ecapa_tdnn", preset="512")
    assert small.layer1.conv.out_channels == 512
    assert build_encoder("ecapa_tdnn", preset="1024").layer1.conv.out_channels == 1024
    # About 6.2 M parameters for C=512 with a 192-d embedding (Desplanques et al. report 6.2 M).
    assert 5.5e6 < sum(p.numel() for p in small.parameters()) < 7e6


def test_unknown_names_are_clear_errors():
    with pytest.raises(ValueError, match="choose one of"):
        build_encoder("wavlm")
    with pytest.raises(ValueError, match="Unknown preset"):
        build_encoder("ecapa_tdnn", preset="256")


def test_ensemble_cosine_is_the_mean_of_its_members_cosines():
    torch.manual_seed(0)
    model = build_encoder("ensemble", **SMALL["ensemble"]).eval()
    a, b = torch.randn(1, 120, 80), torch.randn(1, 75, 80)
    with torch.inference_mode():
        joined = [model(x, torch.ones(1, x.shape[1], dtype=torch.bool)).embedding[0] for x in (a, b)]
        members = [
            [m(x, torch.ones(1, x.shape[1], dtype=torch.bool)).embedding[0] for x in (a, b)] for m in model.members
        ]
    assert joined[0].shape == (384,) and model.embed_dim == 384
    torch.testing.assert_close(joined[0].norm(), torch.tensor(1.0))
    member_cosines = [torch.nn.functional.cosine_similarity(x, y, dim=0) for x, y in members]
    torch.testing.assert_close(joined[0] @ joined[1], sum(member_cosines) / 2)


def test_ensemble_needs_two_plain_members():
    with pytest.raises(ValueError, match="at least two"):
        build_encoder("ensemble", members=[{"name": "ecapa_tdnn", "channels": 32}])
    with pytest.raises(ValueError, match="plain encoders"):
        build_encoder("ensemble", members=[{"name": "ensemble", "members": []}, {"name": "ecapa_tdnn"}])
