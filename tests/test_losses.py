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


# ----------------------------------------------------------------------------- margin warm-up
@pytest.mark.parametrize(
    ("step", "margin"), [(0, 0.0), (99, 0.0), (100, 0.0), (150, 0.1), (175, 0.15), (200, 0.2), (10_000, 0.2)]
)
def test_the_margin_is_0_until_the_warm_up_starts_then_linear_to_the_full_margin(step, margin):
    head = AAMSoftmaxHead(8, 3, margin=0.2, margin_warmup_start=100, margin_warmup_steps=100)
    assert head.margin_at(step) == pytest.approx(margin)


def test_a_warm_up_of_no_steps_switches_the_margin_on_at_its_start():
    head = AMSoftmaxHead(8, 3, margin=0.3, margin_warmup_start=5)
    assert [head.margin_at(step) for step in (0, 4, 5, 6)] == [0.0, 0.0, 0.3, 0.3]
    assert [AMSoftmaxHead(8, 3, margin=0.3).margin_at(step) for step in (0, 1)] == [0.3, 0.3]  # no warm-up


def test_forward_applies_the_margin_of_the_step_the_head_was_told():
    """A head never told a step (a loaded checkpoint) applies its full margin."""
    head = AMSoftmaxHead(2, 2, scale=10.0, margin=0.3, margin_warmup_start=0, margin_warmup_steps=3)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    emb, label = torch.tensor([[math.cos(0.5), math.sin(0.5)]]), torch.tensor([0])

    def loss_with(margin: float) -> torch.Tensor:
        return F.cross_entropy(torch.tensor([[10 * (math.cos(0.5) - margin), 10 * math.sin(0.5)]]), label)

    torch.testing.assert_close(head(emb, label).loss, loss_with(0.3))
    head.set_step(1)  # 0.3 * 1/3
    assert head.current_margin == pytest.approx(0.1)
    torch.testing.assert_close(head(emb, label).loss, loss_with(0.1))


def test_aam_falls_back_to_cos_minus_m_sin_m_past_pi():
    """θ + m > π: cos(θ + m) would rise again, so the target logit is cos θ - m sin m instead."""
    head = AAMSoftmaxHead(2, 2, margin=0.2)
    past, before = torch.tensor([[math.cos(3.0)]]), torch.tensor([[math.cos(2.9)]])  # θ + m = 3.2 and 3.1
    torch.testing.assert_close(head.target_logit(past), torch.tensor([[math.cos(3.0) - 0.2 * math.sin(0.2)]]))
    torch.testing.assert_close(head.target_logit(before), torch.tensor([[math.cos(3.1)]]))
