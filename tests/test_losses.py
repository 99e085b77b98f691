"""Margin heads: AM-Softmax reduces to scaled-cosine cross-entropy, margins shrink the target logit."""

import math

import pytest
import torch
import torch.nn.functional as F

from speakerdemo.losses import AAMSoftmaxHead, AMSoftmaxHead, build_head


def _data():
    torch.manual_seed(0)
    return torch.randn(6, 8), torch.tensor([0, 1, 2, 0, 1, 2])


def test_am_softmax_with_zero_margin_is_scaled_cosine_cross_entropy():
    emb, labels = _data()
    head = AMSoftmaxHead(8, 3, scale=30.0, margin=0.0)
    cosine = F.normalize(emb) @ F.normalize(head.weight).T
    expected = F.cross_entropy(30.0 * cosine, labels)
    torch.testing.assert_close(head(emb, labels).loss, expected)


def test_aam_softmax_with_zero_margin_is_scaled_cosine_cross_entropy():
    emb, labels = _data()
    head = AAMSoftmaxHead(8, 3, scale=20.0, margin=0.0)
    cosine = F.normalize(emb) @ F.normalize(head.weight).T
    torch.testing.assert_close(head(emb, labels).loss, F.cross_entropy(20.0 * cosine, labels))


def test_am_margin_subtracts_from_target_logit_only():
    head = AMSoftmaxHead(2, 2, scale=10.0, margin=0.3)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    emb = torch.tensor([[math.cos(0.5), math.sin(0.5)]])
    out = head(emb, torch.tensor([0]))
    # Target logit 10*(cos 0.5 - 0.3), other logit 10*sin 0.5.
    logits = torch.tensor([[10 * (math.cos(0.5) - 0.3), 10 * math.sin(0.5)]])
    torch.testing.assert_close(out.loss, F.cross_entropy(logits, torch.tensor([0])))
    # Reported logits carry no margin.
    torch.testing.assert_close(out.logits, torch.tensor([[10 * math.cos(0.5), 10 * math.sin(0.5)]]))


def test_aam_margin_adds_to_target_angle():
    head = AAMSoftmaxHead(2, 2, scale=10.0, margin=0.2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    emb = torch.tensor([[math.cos(0.5), math.sin(0.5)]])
    logits = torch.tensor([[10 * math.cos(0.7), 10 * math.sin(0.5)]])
    torch.testing.assert_close(head(emb, torch.tensor([0])).loss, F.cross_entropy(logits, torch.tensor([0])))


def test_aam_easy_margin_leaves_obtuse_targets_alone():
    head = AAMSoftmaxHead(2, 2, scale=10.0, margin=0.2, easy_margin=True)
    cos = torch.tensor([[-0.5, 0.3]])
    torch.testing.assert_close(head.target_logit(cos)[0, 0], torch.tensor(-0.5))
    assert head.target_logit(cos)[0, 1] < 0.3


def test_accuracy_logits_are_per_utterance_without_margin():
    emb, labels = _data()
    for name in ("softmax", "am_softmax", "aam_softmax"):
        head = build_head(name, 8, 3)
        out = head(emb, labels)
        assert out.logits.shape == (6, 3)
        torch.testing.assert_close(out.logits, head.logits(emb).detach())


def test_unknown_head():
    with pytest.raises(ValueError, match="choose one of"):
        build_head("triplet", 8, 3)
