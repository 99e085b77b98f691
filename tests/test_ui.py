"""The web app's handlers, called directly: verify, verdict, enroll/identify, galleries, bad input.

Runs on real speechocean762 test-split clips (read in place) and the trained checkpoint
(``trained_checkpoint`` in conftest.py). Score-level assertions, such as "two clips of one speaker
score higher than clips of two speakers", hold for the trained model only.
"""

from __future__ import annotations

import itertools
import pickle
import subprocess
import sys
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import soundfile as sf
import soxr
from conftest import tiny_encoder

from speakerdemo.app_state import Models, SharedGallery
from speakerdemo.audio import SAMPLE_RATE, AudioError
from speakerdemo.conditions import DESCRIPTIONS, DETECTED, PHONE, WIDEBAND, clip_condition
from speakerdemo.encoder import SPEECH_COLLAR_SECONDS
from speakerdemo.gallery import Gallery
from speakerdemo.layout import build_demo
from speakerdemo.plots import MAX_PLOT_FRAMES, NONTARGET_COLOUR, SPEECH_FILL, TARGET_COLOUR
from speakerdemo.readout import verdict_readout
from speakerdemo.scoring import Calibration, cosine
from speakerdemo.ui import Demo, Session, threshold_range
from speakerdemo.verdict import judge

REPO_ROOT = Path(__file__).resolve().parent.parent
SR = SAMPLE_RATE


# ---------------------------------------------------------------------- fixtures and helpers
@pytest.fixture(scope="module")
def models(trained_checkpoint: Path) -> Models:
    return Models(str(trained_checkpoint), {}, device="cpu")


@pytest.fixture(scope="module")
def demo(models: Models) -> Demo:
    return Demo(models)


@pytest.fixture(scope="module")
def model(models: Models) -> str:
    return models.default


@pytest.fixture(scope="module")
def session(model: str) -> Session:
    """A fresh session on the default model (handlers never change the session they are given)."""
    return Session(model)


@pytest.fixture(scope="module")
def encoder(models: Models):
    return models.get(None)


@pytest.fixture
def calibration(encoder, monkeypatch) -> Calibration:
    """The checkpoint's calibration; an uncalibrated checkpoint gets a synthetic one for the test."""
    if encoder.calibration is None:
        rng = np.random.default_rng(0)
        scores = np.concatenate([rng.normal(0.7, 0.1, 400), rng.normal(0.2, 0.12, 400)])
        labels = np.r_[np.ones(400), np.zeros(400)]
        monkeypatch.setattr(
            encoder, "calibration", Calibration.from_scores(scores, labels, trials="synthetic test trials")
        )
    return encoder.calibration


@pytest.fixture(scope="module")
def spk(speech_clips) -> tuple[str, str, str]:
    return tuple(speech_clips)  # type: ignore[return-value]


def message(excinfo: pytest.ExceptionInfo) -> str:
    """The text a gr.Error shows in the browser."""
    assert isinstance(excinfo.value, gr.Error)
    return excinfo.value.message


def read(path: Path) -> tuple[np.ndarray, int]:
    data, sr = sf.read(path, dtype="float32")
    return data, sr


def duration(path: Path) -> float:
    return sf.info(path).duration


# ---------------------------------------------------------------------- verify
def test_same_speaker_scores_higher_than_different_speakers(demo, session, speech_clips):
    """Several pairs each way, compared by their means (single pairs can be flaky)."""
    clips = {s: c[:3] for s, c in speech_clips.items()}
    same = [demo.verify(session, a, b, 0.5)[-1].score for c in clips.values() for a, b in itertools.combinations(c, 2)]
    different = [
        demo.verify(session, clips[s][i], clips[t][i], 0.5)[-1].score
        for s, t in itertools.combinations(clips, 2)
        for i in range(3)
    ]
    assert len(same) == 9 and len(different) == 9
    encoder = demo.encoder(session)
    if encoder.cohort is None:  # a cosine less its kind's shift (normalised scores have no such bound)
        bound = 1.0 + max(map(abs, (encoder.calibration.shifts if encoder.calibration else {}).values()), default=0.0)
        assert all(-bound <= x <= bound for x in same + different)
    print(f"\nmean score: same speaker {np.mean(same):.3f}, different speakers {np.mean(different):.3f}")
    assert np.mean(same) > np.mean(different) + 0.05
    # The two speakers of different gender are the clearest case: same pairs beat every cross pair on average.
    s1, s2 = list(clips)[:2]
    clear_same = [demo.verify(session, clips[s][0], clips[s][1], 0.5)[-1].score for s in (s1, s2)]
    clear_diff = [demo.verify(session, clips[s1][i], clips[s2][j], 0.5)[-1].score for i in (0, 1) for j in (0, 1)]
    assert np.mean(clear_same) > max(clear_diff)


def test_verdict_states_score_threshold_and_calibrated_error_rates(
    demo, session, encoder, calibration, speech_clips, spk
):
    a, b = speech_clips[spk[0]][:2]
    threshold = demo.switch_model(session, session.model)[1].value  # the slider's default
    assert threshold == calibration.threshold
    *_, text, _, verdict = demo.verify(session, a, b, threshold)
    kind, score = verdict.kind, verdict.score
    ea, eb = demo.embed(session, [a, b])
    assert kind in DETECTED
    assert score == pytest.approx(encoder.score(ea, eb) - calibration.shifts.get(kind, 0.0), abs=1e-6)
    far, frr = calibration.rates_at(threshold)
    assert f"**{score:.3f}**" in text
    assert f"**{threshold:.3f}**" in text
    assert f"**{100 * far:.1f} %** false accepts and **{100 * frr:.1f} %** false rejects" in text
    assert f"EER {100 * calibration.eer:.2f} %" in text and calibration.rule in text
    if kind in calibration.conditions:
        far, frr = calibration.conditions[kind].rates_at(threshold)
        assert DESCRIPTIONS[kind] in text
        assert f"**{100 * far:.1f} %** of different-speaker pairs pass" in text
        assert f"**{100 * frr:.1f} %** of same-speaker pairs are rejected" in text
    # The decision: "same" above the uncertain band, "different" below it (speakerdemo.verdict).
    low, high = verdict.band
    assert low <= threshold <= high
    assert ("Same speaker" in text) == (score >= high) == (verdict.decision == "same")
    assert ("Different speakers" in text) == (score < low) == (verdict.decision == "different")
    assert ("Uncertain" in text) == (verdict.decision == "uncertain")


def test_threshold_slider_spans_the_checkpoints_scores(demo, session, encoder):
    """A cosine's slider runs over [-1, 1]; normalised scores are unbounded, so a checkpoint with a
    cohort gets whole numbers around every score its calibration saw, its threshold inside."""
    slider = demo.switch_model(session, session.model)[1]
    assert (slider.minimum, slider.maximum) == threshold_range(encoder)
    assert slider.minimum <= encoder.threshold <= slider.maximum
    if encoder.cohort is not None:
        seen = encoder.calibration.thresholds
        assert slider.minimum <= seen[0] and seen[-1] <= slider.maximum
        assert slider.minimum == int(slider.minimum) and slider.maximum == int(slider.maximum)
    assert threshold_range(tiny_encoder()) == (-1.0, 1.0)


def test_verdict_reads_the_rates_of_the_pairs_kind_of_clip():
    """A calibration across conditions: the verdict names the kind of clip, its shift and its own
    rates, then the pooled ones."""
    rng = np.random.default_rng(0)

    def condition(offset: float, kind: str) -> tuple:
        scores = np.r_[rng.normal(0.8 + offset, 0.05, 50), rng.normal(0.2 + offset, 0.1, 500)]
        return scores, np.r_[np.ones(50), np.zeros(500)].astype(int), np.array([kind] * 550)

    cal = Calibration.across_conditions(
        {"16 kHz": condition(0.0, WIDEBAND), "8 kHz": condition(0.3, PHONE)}, WIDEBAND, 0.05, "two synthetic"
    )
    shift = cal.shifts[PHONE]
    assert 0.2 < shift < 0.4
    text, _ = verdict_readout(judge(cal, 0.9 - shift, PHONE, cal.threshold), cal)
    assert (
        f"Score **{0.9 - shift:.3f}** (the cosine similarity 0.900 less {shift:.3f} for {DESCRIPTIONS[PHONE]})" in text
    )
    far, frr = cal.conditions["8 kHz"].rates_at(cal.threshold)
    assert f"For {DESCRIPTIONS[PHONE]}, like these two, about **{100 * far:.1f} %**" in text
    assert "Over all two synthetic" in text and "Same speaker" in text
    plain, _ = verdict_readout(judge(cal, 0.1, WIDEBAND, cal.threshold), cal)  # no shift: the cosine itself
    assert "Cosine similarity **0.100**" in plain and "Different speakers" in plain


def test_verdict_moves_with_the_threshold_without_calling_the_model(
    demo, session, encoder, calibration, speech_clips, spk, monkeypatch
):
    *_, verdict = demo.verify(session, speech_clips[spk[0]][0], speech_clips[spk[1]][0], 0.0)
    score = verdict.score

    def no_model_calls(*args, **kwargs):
        raise AssertionError("the model was called")

    monkeypatch.setattr(encoder, "embed_batch", no_model_calls)
    with pytest.raises(AssertionError, match="the model was called"):  # the patch is effective
        demo.verify(session, speech_clips[spk[0]][0], speech_clips[spk[1]][0], 0.0)

    # Far enough either side that the score leaves the uncertain band around each threshold.
    low, high = score - 20, score + 20
    accept, dist_low = demo.verdict(session, verdict, low)
    reject, dist_high = demo.verdict(session, verdict, high)
    assert "Same speaker" in accept and "Different speakers" not in accept
    assert "Different speakers" in reject and "Same speaker" not in reject
    for text, t in ((accept, low), (reject, high)):
        far, frr = calibration.rates_at(t)
        assert f"against threshold **{t:.3f}**" in text
        assert f"**{100 * far:.1f} %**" in text and f"**{100 * frr:.1f} %**" in text
    for dist, t in ((dist_low, low), (dist_high, high)):
        lines = [s.x0 for s in dist.layout.shapes if s.type == "line"]
        assert lines == pytest.approx([t, score])
    prompt, _ = demo.verdict(session, None, 0.3)  # before any Verify: a prompt, no decision
    assert "press **Verify**" in prompt and "speaker" not in prompt.lower()


def test_a_request_fetches_its_encoder_once(models, model, speech_clips, spk, monkeypatch):
    """Verify (embed, score, verdict) and identify (embed, classify) each ask the registry once."""
    demo = Demo(models)
    session = demo.enroll(Session(model), spk[0], None, speech_clips[spk[0]][:1])[0]
    fetched = []
    real = models.get
    monkeypatch.setattr(models, "get", lambda name: fetched.append(name) or real(name))
    demo.verify(session, speech_clips[spk[0]][1], speech_clips[spk[1]][0], 0.5)
    assert fetched == [model]
    demo.identify(session, speech_clips[spk[0]][1], 0.5, 5)
    assert fetched == [model, model]


def test_verdict_of_an_uncalibrated_checkpoint_says_so(demo, session, encoder, monkeypatch):
    monkeypatch.setattr(encoder, "calibration", None)
    text, dist = demo.verdict(session, judge(None, 0.42, WIDEBAND, 0.5), 0.5)
    assert "Different speakers" in text and "**0.420**" in text
    assert "no calibration" in text
    assert not [t for t in dist.data if t.type == "bar"]
    assert [s.x0 for s in dist.layout.shapes if s.type == "line"] == pytest.approx([0.5, 0.42])
    lo, hi = dist.layout.xaxis.range  # a cosine axis, not plotly's guess from the annotations
    assert -1.1 <= lo <= -0.9 and 0.9 <= hi <= 1.1


def test_spectrogram_figure_shows_seconds_attention_and_speech_regions(demo, session, speech_clips, spk):
    a, b = speech_clips[spk[0]][:2]
    fig_a, fig_b, *_ = demo.verify(session, a, b, 0.5)
    for fig, clip in ((fig_a, a), (fig_b, b)):
        emb = demo.embed(session, [clip])[0]
        heatmap, attention = fig.data[0], fig.data[1]
        assert heatmap.type == "heatmap" and attention.type == "scatter"
        x = np.asarray(heatmap.x, dtype=float)
        assert len(x) <= MAX_PLOT_FRAMES  # a short clip is not decimated
        assert np.all(np.diff(x) > 0) and x[0] == pytest.approx(0.0, abs=0.02)
        assert x[-1] == pytest.approx(duration(clip), abs=0.05)  # seconds, ending at the clip's end
        assert np.asarray(heatmap.z).shape == (emb.mel.shape[1], len(x))
        assert np.asarray(attention.x, dtype=float) == pytest.approx(x)
        weights = np.asarray(attention.y, dtype=float)
        assert weights.min() >= 0 and weights.sum() == pytest.approx(1.0, abs=1e-3)
        shaded = [s for s in fig.layout.shapes if s.type == "rect" and s.fillcolor == SPEECH_FILL]
        assert len(emb.speech_regions) >= 1
        assert len(shaded) == len(emb.speech_regions)
        assert [x for s in shaded for x in (s.x0, s.x1)] == pytest.approx([x for r in emb.speech_regions for x in r])
        # All attention lies inside the shaded speech regions, widened by the pooling collar.
        inside = np.zeros(len(x), dtype=bool)
        margin = SPEECH_COLLAR_SECONDS + 0.011
        for start, end in emb.speech_regions:
            inside |= (x >= start - margin) & (x <= end + margin)
        assert weights[~inside].sum() == pytest.approx(0.0, abs=1e-6)
        assert f"{emb.speech_seconds:.1f} s of speech in {emb.duration_seconds:.1f} s" in fig.layout.title.text
    assert fig_a.layout.title.text.startswith("Clip A") and fig_b.layout.title.text.startswith("Clip B")


def test_long_clips_are_decimated_for_the_browser(demo, session, speech_clips, spk):
    parts = [read(p)[0] for p in speech_clips[spk[0]]]
    wav = np.concatenate(parts)  # > 15 s: more frames than the browser gets
    fig, report = demo.inspect(session, (SR, wav))
    x = np.asarray(fig.data[0].x, dtype=float)
    assert len(wav) / SR > MAX_PLOT_FRAMES * 0.01 and len(x) <= MAX_PLOT_FRAMES
    step = x[1] - x[0]
    assert x[-1] == pytest.approx(len(wav) / SR, abs=step + 0.02)
    assert np.asarray(fig.data[1].y, dtype=float).sum() == pytest.approx(1.0, abs=0.02)
    assert "s of speech" in report


def test_distribution_figure_has_both_histograms_and_the_score(demo, session, calibration, speech_clips, spk):
    a, b = speech_clips[spk[0]][:2]
    *_, dist, verdict = demo.verify(session, a, b, calibration.threshold)
    kind, score = verdict.kind, verdict.score
    shown = calibration.conditions.get(kind, calibration)  # the pair's own kind of clip, when calibrated
    bars = {t.name: t for t in dist.data if t.type == "bar"}
    assert set(bars) == {"same speaker", "different speakers"}
    assert bars["same speaker"].marker.color == TARGET_COLOUR
    assert bars["different speakers"].marker.color == NONTARGET_COLOUR
    assert list(bars["same speaker"].y) == pytest.approx(shown.target_hist)
    assert list(bars["different speakers"].y) == pytest.approx(shown.nontarget_hist)
    lines = [s.x0 for s in dist.layout.shapes if s.type == "line"]
    assert lines == pytest.approx([calibration.threshold, score])
    assert any(f"this pair {score:.3f}" == a.text for a in dist.layout.annotations)


# ---------------------------------------------------------------------- enroll / identify
def _enrolled(demo: Demo, model: str, speech_clips, spk) -> Session:
    """Speaker 1 enrolled from two paths, speaker 2 from two (sr, int16) tuples, as a microphone gives."""
    session, table, _, note = demo.enroll(Session(model), spk[0], None, speech_clips[spk[0]][:2])
    assert table == [[spk[0], 2]] and f"Enrolled **{spk[0]}** with 2 clip(s)." in note
    mic = []
    for path in speech_clips[spk[1]][:2]:
        data, sr = sf.read(path, dtype="int16")
        mic.append((sr, data))
    session, table, emb_map, note = demo.enroll(session, f"  {spk[1]} ", mic[0], mic[1:])
    assert table == [[spk[0], 2], [spk[1], 2]] and f"Enrolled **{spk[1]}**" in note
    assert [t.name for t in emb_map.data] == [spk[0], spk[1]]
    return session


def test_enroll_then_identify(demo, model, encoder, speech_clips, spk):
    session = _enrolled(demo, model, speech_clips, spk)
    query = speech_clips[spk[0]][2]  # a third clip of speaker 1, not enrolled
    text, ranking, classes, emb_map, spec = demo.identify(session, query, encoder.threshold, 5)
    assert text.startswith(f"## {spk[0]}\n") and f"Best match **{spk[0]}**" in text
    # The score is the checkpoint's score against the speaker's centroid (the cosine, normalised
    # against its cohort when it has one) less the shift for the query's kind of clip.
    emb = demo.embed(session, [query])[0]
    shift = encoder.calibration.shifts.get(clip_condition(emb), 0.0) if encoder.calibration else 0.0
    centroid = demo.gallery_of(session).centroid(spk[0])
    expected = encoder.score(centroid, emb.vector) - shift
    if encoder.cohort is not None:
        assert expected != pytest.approx(float(cosine(centroid, emb.vector)) - shift, abs=1e-3)
        assert "normalised against" in text
    assert f"**{expected:.3f}**" in text and ranking.data[0].x[-1] == pytest.approx(expected, abs=1e-5)
    assert ranking.layout.title.text == f"Best match: {spk[0]}"
    assert list(ranking.data[0].y)[::-1] == [spk[0], spk[1]]  # best on top
    assert [t.name for t in emb_map.data] == [spk[0], spk[1], "query"]
    assert spec.data[0].type == "heatmap"
    if encoder.classes:  # the checkpoint's own classifier: top training speakers with probabilities
        assert len(classes) == min(5, len(encoder.classes))
        assert all(name in encoder.classes and 0 <= p <= 1 for name, p in classes)

    text, ranking, *_ = demo.identify(session, query, expected + 1.0, 5)
    assert text.startswith("## unknown\n") and "reported as **unknown**" in text
    assert ranking.layout.title.text == "Best match: unknown"

    text, ranking, *_ = demo.identify(session, query, encoder.threshold, 1)
    assert len(ranking.data[0].y) == 1


def test_identify_with_an_empty_gallery(demo, model, speech_clips, spk):
    with pytest.raises(gr.Error) as excinfo:
        demo.identify(Session(model), speech_clips[spk[0]][0], 0.5, 5)
    assert "No speakers enrolled yet" in message(excinfo) and "Enroll tab" in message(excinfo)


def test_remove_export_and_load(demo, model, speech_clips, spk, tmp_path):
    session = _enrolled(demo, model, speech_clips, spk)
    path = Path(demo.export(session))
    assert path.is_file() and path.suffix == ".safetensors"
    saved = demo.gallery_of(session)

    fresh, table, emb_map, note = demo.load(Session(model), str(path))
    assert table == [[spk[0], 2], [spk[1], 2]] and note == "Loaded 2 speaker(s)."
    assert [t.name for t in emb_map.data] == [spk[0], spk[1]]
    for name in saved.names():
        np.testing.assert_array_equal(demo.gallery_of(fresh).clips(name), saved.clips(name))
    # Gradio may hand the file over as an object with .name or a dict with "path".
    assert demo.load(Session(model), {"path": str(path)})[1] == table

    smaller, table, emb_map, note = demo.remove(session, spk[0])
    assert table == [[spk[1], 2]] and note == f"Removed **{spk[0]}**."
    assert [t.name for t in emb_map.data] == [spk[1]]
    assert demo.gallery_of(session).names() == [spk[0], spk[1]]  # the old state is untouched
    with pytest.raises(gr.Error) as excinfo:
        demo.remove(smaller, spk[0])
    assert f"No enrolled speaker named '{spk[0]}'" in message(excinfo)
    _, table, _, _ = demo.remove(smaller, spk[1])
    assert table == []
    with pytest.raises(gr.Error) as excinfo:
        demo.export(Session(model))
    assert "gallery is empty" in message(excinfo)


def test_load_refuses_bad_gallery_files(demo, model, encoder, speech_clips, spk, tmp_path):
    good = Path(demo.export(_enrolled(demo, model, speech_clips, spk))).read_bytes()
    pickled = tmp_path / "evil.safetensors"
    pickled.write_bytes(pickle.dumps({"speakers": ["a"], "clips": np.ones((1, 3))}))
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good[: len(good) - 100])
    for bad in (pickled, truncated):
        with pytest.raises(gr.Error) as excinfo:
            demo.load(Session(model), str(bad))
        assert message(excinfo).startswith("Cannot load that gallery: Not a valid safetensors gallery file")

    wrong_dim = Gallery()
    wrong_dim.enroll("someone", [np.ones(encoder.model.embed_dim + 1)])
    wrong_dim.save(tmp_path / "wrong.safetensors")
    with pytest.raises(gr.Error) as excinfo:
        demo.load(Session(model), str(tmp_path / "wrong.safetensors"))
    dim = encoder.model.embed_dim
    assert f"{dim + 1}-d embeddings; this model makes {dim}-d" in message(excinfo)

    with pytest.raises(gr.Error) as excinfo:
        demo.load(Session(model), None)
    assert "Choose a gallery file" in message(excinfo)


def test_enroll_refuses_a_missing_name_or_clip(demo, model, speech_clips, spk):
    clip = speech_clips[spk[0]][0]
    for name in ("", "   ", None):
        with pytest.raises(gr.Error) as excinfo:
            demo.enroll(Session(model), name, None, [clip])
        assert message(excinfo) == "Give the speaker a name."
    for clips in ([], [None], None):
        with pytest.raises(gr.Error) as excinfo:
            demo.enroll(Session(model), "alice", None, clips)
        assert message(excinfo) == "Record or upload at least one clip of the speaker."
    with pytest.raises(gr.Error) as excinfo:
        demo.enroll(Session(model), "Unknown", None, [clip])
    assert "reserved" in message(excinfo)


# ---------------------------------------------------------------------- sessions
def test_sessions_are_isolated(demo, model, speech_clips, spk):
    start = Session(model)
    one, table_one, *_ = demo.enroll(start, spk[0], None, speech_clips[spk[0]][:2])
    two, table_two, *_ = demo.enroll(Session(model), spk[1], None, speech_clips[spk[1]][:2])
    assert table_one == [[spk[0], 2]] and table_two == [[spk[1], 2]]
    assert demo.gallery_of(one).names() == [spk[0]]
    assert demo.gallery_of(two).names() == [spk[1]]
    assert len(demo.gallery_of(start)) == 0  # handlers return new state, never mutate the old one
    # Session two can only ever answer with its own speaker (or "unknown").
    text, ranking, *_ = demo.identify(two, speech_clips[spk[0]][2], -1.0, 5)
    assert list(ranking.data[0].y) == [spk[1]] and spk[0] not in text


def test_shared_gallery_is_seen_by_every_session_and_persisted(models, model, speech_clips, spk, tmp_path):
    path = tmp_path / "g.safetensors"
    demo = Demo(models, SharedGallery(path))
    one, two = Session(model), Session(model)
    demo.enroll(one, spk[0], None, speech_clips[spk[0]][:2])
    _, table, *_ = demo.enroll(two, spk[1], None, speech_clips[spk[1]][:1])
    expected = [[spk[0], 2], [spk[1], 1]]
    assert table == expected
    for session in (one, two, Session(model)):
        assert demo.switch_model(session, model)[3] == expected
    on_disk, reloaded = Gallery.load(path), SharedGallery(path).snapshot()
    for gallery in (on_disk, reloaded):
        assert gallery.clip_counts() == dict(expected)
        for name in gallery.names():
            np.testing.assert_array_equal(gallery.clips(name), demo.gallery_of(one).clips(name))
    demo.remove(one, spk[0])
    assert Gallery.load(path).names() == [spk[1]] and demo.gallery_of(two).names() == [spk[1]]


# ---------------------------------------------------------------------- bad input
def _bad_clip(kind: str, real: Path, tmp_path: Path):
    if kind == "not audio":
        path = tmp_path / "notes.wav"
        path.write_text("this is a text file, not a recording\n" * 50)
        return path
    if kind == "silent":
        return (SR, np.zeros(3 * SR, dtype=np.float32))
    if kind == "0.2 s":
        return (SR, read(real)[0][SR : SR + SR // 5])
    if kind == "NaN samples":
        wav = read(real)[0].copy()
        wav[1000:1010] = np.nan
        return (SR, wav)
    if kind == "too long":
        rng = np.random.default_rng(0)
        return (SR, (0.1 * rng.standard_normal(61 * SR)).astype(np.float32))
    raise ValueError(kind)


@pytest.mark.parametrize(
    "kind, words",
    [
        ("not audio", "Could not read 'notes.wav' as audio"),
        ("silent", "The audio is silent (digital silence"),
        ("0.2 s", "s of speech detected; at least"),
        ("NaN samples", "NaN or infinite values"),
        ("too long", "The clip is 61.0 s long; the limit is 60 s."),
    ],
)
def test_bad_input_becomes_a_gr_error_with_the_reason(demo, session, encoder, speech_clips, spk, tmp_path, kind, words):
    clip = _bad_clip(kind, speech_clips[spk[0]][0], tmp_path)
    with pytest.raises(AudioError) as reason:
        encoder.embed_batch([clip], max_seconds=demo.max_seconds)
    with pytest.raises(gr.Error) as excinfo:
        demo.inspect(session, clip)
    assert message(excinfo) == str(reason.value)
    assert words in message(excinfo)
    # In a pair, the message says which clip was bad.
    with pytest.raises(gr.Error) as excinfo:
        demo.verify(session, speech_clips[spk[0]][1], clip, 0.5)
    assert message(excinfo) == f"Clip B: {reason.value}"


def test_clip_over_max_seconds(models, model, speech_clips, spk):
    long_clip = speech_clips[spk[0]][1]
    assert duration(long_clip) > 5
    strict = Demo(models, max_seconds=5.0)
    with pytest.raises(gr.Error) as excinfo:
        strict.inspect(Session(model), long_clip)
    assert message(excinfo) == f"The clip is {duration(long_clip):.1f} s long; the limit is 5 s."
    with pytest.raises(gr.Error) as excinfo:
        strict.enroll(Session(model), "x", None, [long_clip])
    assert "the limit is 5 s" in message(excinfo)


def test_missing_clip(demo, session, speech_clips, spk):
    with pytest.raises(gr.Error) as excinfo:
        demo.verify(session, speech_clips[spk[0]][0], None, 0.5)
    assert message(excinfo) == "Please record or upload a clip first."


def _good_clip(kind: str, real: Path, tmp_path: Path):
    wav, sr = read(real)
    assert sr == SR
    if kind == "48 kHz stereo int16 tuple":
        up = soxr.resample(wav, SR, 48000)
        stereo = np.stack([up, 0.8 * up], axis=1)
        return (48000, np.round(stereo * 32767).astype(np.int16))
    if kind == "8 kHz wav":
        path = tmp_path / "phone.wav"
        sf.write(path, soxr.resample(wav, SR, 8000), 8000, subtype="PCM_16")
        return path
    fmt, subtype = {"mp3": ("MP3", None), "ogg": ("OGG", "VORBIS"), "flac": ("FLAC", "PCM_16")}[kind]
    path = tmp_path / f"clip.{kind}"
    sf.write(path, wav, SR, format=fmt, subtype=subtype)
    return path


@pytest.mark.parametrize("kind", ["48 kHz stereo int16 tuple", "8 kHz wav", "mp3", "ogg", "flac"])
def test_other_formats_work(demo, session, speech_clips, spk, tmp_path, kind):
    real = speech_clips[spk[0]][0]
    clip = _good_clip(kind, real, tmp_path)
    fig, report = demo.inspect(session, clip)
    assert fig.data[0].type == "heatmap" and "s of speech" in report
    emb, original = demo.embed(session, [clip, real])
    assert emb.duration_seconds == pytest.approx(original.duration_seconds, abs=0.1)
    assert emb.speech_seconds == pytest.approx(original.speech_seconds, abs=0.5)
    if kind != "8 kHz wav":  # same audio, other container or rate: (nearly) the same embedding
        assert cosine(emb.vector, original.vector) > 0.8


# ---------------------------------------------------------------------- warnings
def test_mostly_silent_and_clipped_clips_are_flagged(demo, session, speech_clips, spk):
    wav, _ = read(speech_clips[spk[0]][0])
    _, clean = demo.inspect(session, (SR, wav))
    assert "⚠️" not in clean

    pad = np.zeros(2 * len(wav), dtype=np.float32)
    quiet = np.concatenate([pad, wav, pad])  # 80 % silence
    _, report = demo.inspect(session, (SR, quiet))
    assert "mostly silence" in report
    _, _, verdict_text, *_ = demo.verify(session, (SR, quiet), (SR, wav), 0.5)
    assert "**Clip A:** The clip is mostly silence" in verdict_text and "**Clip B:**" not in verdict_text

    loud = np.clip(wav * 20 / np.abs(wav).max(), -1.0, 1.0)
    _, report = demo.inspect(session, (SR, loud))
    assert "clipped" in report and "mostly silence" not in report


# ---------------------------------------------------------------------- the page
def test_the_api_names_call_the_demo_methods_directly(demo):
    """No adapters between the page and the handlers: each API event is wired to a Demo method."""
    wired = {f.api_name: f.fn for f in build_demo(demo).fns.values()}
    assert {
        name: wired[name]
        for name in ("verify", "enroll", "identify", "inspect", "remove", "export_gallery", "import_gallery")
    } == {
        "verify": demo.verify,
        "enroll": demo.enroll,
        "identify": demo.identify,
        "inspect": demo.inspect,
        "remove": demo.remove,
        "export_gallery": demo.export,
        "import_gallery": demo.load,
    }


# ---------------------------------------------------------------------- the command line
def test_app_help():
    result = subprocess.run(
        [sys.executable, "app.py", "--help"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr
    for option in ("--model", "--port", "--share", "--gallery"):
        assert option in result.stdout
    assert "persistent gallery" in result.stdout and "public" in result.stdout


def test_app_main_wires_arguments_to_the_demo(trained_checkpoint, tmp_path, monkeypatch):
    """main() without a server: a checkpoints/ folder given as a path is listed once, by name."""
    monkeypatch.syspath_prepend(str(REPO_ROOT))
    import app

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "mine").symlink_to(trained_checkpoint, target_is_directory=True)
    monkeypatch.setattr(app, "CHECKPOINTS", folder)
    launched = {}
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kwargs: launched.update(kwargs, blocks=self))
    gallery = tmp_path / "shared.safetensors"
    monkeypatch.setattr(
        sys, "argv", ["app.py", "--model", str(folder / "mine"), "--port", "7999", "--gallery", str(gallery)]
    )
    app.main()
    assert launched["server_port"] == 7999 and launched["server_name"] == "127.0.0.1"
    assert launched["share"] is False
    config = launched["blocks"].config
    dropdown = next(c for c in config["components"] if c["props"].get("label") == "Model")
    assert dropdown["props"]["value"] == "mine"
    assert [choice[0] for choice in dropdown["props"]["choices"]] == ["mine"]
    assert dropdown["props"]["interactive"] is False  # a shared gallery pins the model


# ---------------------------------------------------------------------- evidence, cohesion, who spoke when
def test_verify_evidence_shows_which_stretches_agree(demo, session, encoder, speech_clips, spk):
    same_fig, same_text = demo.evidence(session, *speech_clips[spk[0]][:2], encoder.threshold)
    other_fig, other_text = demo.evidence(session, speech_clips[spk[0]][0], speech_clips[spk[1]][0], encoder.threshold)
    (heatmap,) = same_fig.data
    assert heatmap.type == "heatmap" and np.asarray(heatmap.z).shape == (len(heatmap.y), len(heatmap.x))
    for text in (same_text, other_text):
        assert "| speech |" in text and "| voices | one | one |" in text
    share = [int(t.split("**")[1].rstrip(" %")) for t in (same_text, other_text)]
    assert share[0] > 50 > share[1]


def test_verify_evidence_names_the_problem_of_a_silent_clip(demo, session, encoder, speech_clips, spk, tmp_path):
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(3 * SR, dtype=np.float32), SR)
    figure, text = demo.evidence(session, speech_clips[spk[0]][0], silent, encoder.threshold)
    assert text.startswith("No evidence view for these clips: The audio is silent") and not figure.data


def test_enroll_leaves_out_a_clip_of_another_speaker(demo, model, encoder, speech_clips, spk):
    clips = [*speech_clips[spk[0]][:3], speech_clips[spk[1]][0]]
    session, table, _, note = demo.enroll(Session(model), spk[0], None, clips)
    assert table == [[spk[0], 3]] and f"Enrolled **{spk[0]}** with 4 clip(s), 1 left out." in note
    assert "clip 4:" in note and "⚠️ left out" in note
    _, table, _, note = demo.enroll(Session(model), spk[0], None, clips, True)  # kept when asked
    assert table == [[spk[0], 4]] and "left out" not in note.split(".")[0]
    with pytest.raises(gr.Error) as excinfo:  # nothing of the speaker among the new clips
        demo.enroll(session, spk[0], None, speech_clips[spk[1]][:1])
    assert "None of these clips sounds like" in message(excinfo)


def test_identify_reports_the_margin_to_the_runner_up(demo, model, encoder, speech_clips, spk):
    session = _enrolled(demo, model, speech_clips, spk)
    text, *_ = demo.identify(session, speech_clips[spk[0]][2], encoder.threshold, 5)
    assert f"Runner-up **{spk[1]}** scores" in text and "a margin of **" in text
    report = demo.query_evidence(session, speech_clips[spk[0]][2])
    assert report.startswith("| | Query |") and "| voices | one |" in report


@pytest.fixture(scope="module")
def conversation_wav(speech_clips, spk, tmp_path_factory) -> Path:
    """Turns A B A B of the first two speakers' first two clips, 0.5-s pauses, as a wav file."""
    parts = []
    for speaker, index in ((spk[0], 0), (spk[1], 0), (spk[0], 1), (spk[1], 1)):
        wav, sr = read(speech_clips[speaker][index])
        parts += [wav, np.zeros(sr // 2, dtype=np.float32)]
    path = tmp_path_factory.mktemp("diarize") / "two people.wav"
    sf.write(path, np.concatenate(parts), sr)
    return path


def test_who_spoke_when_finds_enrolls_and_names(demo, model, speech_clips, spk, conversation_wav):
    found, figure, segments, talk, summary, rttm, dropdown = demo.diarize(Session(model), conversation_wav, 0, True)
    assert summary.startswith("**2 speaker(s)**") and [row[0] for row in talk] == ["Speaker 1", "Speaker 2"]
    assert [row[2] for row in segments] == ["Speaker 1", "Speaker 2", "Speaker 1", "Speaker 2"]
    assert dropdown.choices == [("Speaker 1", "Speaker 1"), ("Speaker 2", "Speaker 2")]
    lines = Path(rttm).read_text().splitlines()
    assert Path(rttm).name == "two_people.rttm" and all(line.startswith("SPEAKER two_people 1 ") for line in lines)
    assert {t.name for t in figure.data if t.type == "bar"} == {"Speaker 1", "Speaker 2"}
    # Enroll the first found speaker; a second run names them.
    session, table, _, note = demo.enroll_found(Session(model), found, "Speaker 1", "Ann Lee")
    assert table == [["Ann Lee", 2]] and note.startswith("Enrolled **Ann Lee** with Speaker 1's 2 longest turn(s)")
    _, _, segments, _, summary, rttm, dropdown = demo.diarize(session, conversation_wav, 0, True)
    assert [row[2] for row in segments] == ["Ann Lee", "Speaker 1", "Ann Lee", "Speaker 1"]
    assert "enrolled: **Ann Lee**" in summary and dropdown.choices == [("Speaker 1", "Speaker 1")]
    assert "Ann_Lee" in Path(rttm).read_text()
    _, _, segments, *_ = demo.diarize(session, conversation_wav, 0, False)  # names off: clusters only
    assert {row[2] for row in segments} == {"Speaker 1", "Speaker 2"}


def test_who_spoke_when_refuses_bad_input(demo, session, spk, speech_clips, conversation_wav, tmp_path):
    long_file = tmp_path / "long.wav"
    sf.write(long_file, np.zeros(601 * 8000, dtype=np.int16), 8000)
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(5 * SR, dtype=np.float32), SR)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF not really a wave file")
    cases = {
        None: "record or upload",
        long_file: "600",
        silent: "silent",
        corrupt: "could not read",
    }
    for recording, words in cases.items():
        with pytest.raises(gr.Error) as excinfo:
            demo.diarize(session, recording, 0, True)
        assert words in message(excinfo).lower(), message(excinfo)
    with pytest.raises(gr.Error, match="whole number"):
        demo.diarize(session, conversation_wav, 1.5, True)
    with pytest.raises(gr.Error, match="Find who spoke when first"):
        demo.enroll_found(session, None, "Speaker 1", "Ann")
    found, *_ = demo.diarize(session, conversation_wav, 0, True)
    with pytest.raises(gr.Error, match="No speaker 'Speaker 9'"):
        demo.enroll_found(session, found, "Speaker 9", "Ann")
    with pytest.raises(gr.Error, match="Give the speaker a name"):
        demo.enroll_found(session, found, "Speaker 1", "  ")


# ---------------------------------------------------------------------- calibrate on your own people
def people_zip(speech_clips, path: Path, clips: int = 2) -> Path:
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        for speaker, files in speech_clips.items():
            for i, f in enumerate(files[:clips]):
                archive.write(f, f"{speaker}/{i}{f.suffix}")
    return path


def test_calibrate_from_a_zip_applies_to_the_session_only(demo, model, encoder, speech_clips, spk, tmp_path):
    start = Session(model)
    session, text, figure, saved, slider = demo.calibrate(start, people_zip(speech_clips, tmp_path / "p.zip"), False, 5)
    assert text.startswith("**Calibrated on your 3 people** (6 clips: 3 same-person and 12 different-person pairs)")
    assert "Only 3 people" in text and session.calibration == Path(saved).read_bytes()
    mine = demo.encoder(session)
    assert mine.adaptation.people == 3 and slider.value == round(mine.threshold, 3)
    assert demo.encoder(start) is encoder  # other sessions keep the model's own calibration
    assert {t.name for t in figure.data} >= {"same person", "different people", "DET"}
    # The session's Verify judges with it; a saved file gives the same in a fresh session.
    a, b = speech_clips[spk[0]][3], speech_clips[spk[1]][3]
    verdict = demo.verify(session, a, b, mine.threshold)[-1]
    assert verdict.threshold == mine.threshold and "your 3 people" in demo.verify(session, a, b, mine.threshold)[2]
    loaded, *_ = demo.load_calibration(Session(model), saved)
    assert demo.verify(loaded, a, b, mine.threshold)[-1].decision == verdict.decision
    back, text, _, slider = demo.reset_calibration(session)
    assert back.calibration is None and slider.value == round(encoder.threshold, 3)


def test_calibrate_from_the_gallery_and_what_it_refuses(demo, model, speech_clips, spk, tmp_path):
    session = _enrolled(demo, model, speech_clips, spk)
    calibrated, text, *_ = demo.calibrate(session, None, True, 5)
    assert "your 2 people" in text and calibrated.gallery.names() == session.gallery.names()
    bad_zip = tmp_path / "bad.zip"
    bad_zip.write_bytes(b"not a zip")
    one = Session(model)
    cases = [
        ((one, None, False, 5), "Upload a zip"),
        ((one, bad_zip, False, 5), "Not a readable zip"),
        ((one, people_zip({spk[0]: speech_clips[spk[0]]}, tmp_path / "one.zip"), False, 5), "at least 2 different"),
        ((one, None, True, 5), "at least 2 different people"),  # nobody enrolled
        ((one, None, True, 0), "percentage between 0 and 100"),
    ]
    for arguments, words in cases:
        with pytest.raises(gr.Error) as excinfo:
            demo.calibrate(*arguments)
        assert words in message(excinfo)
    not_ours = tmp_path / "other.safetensors"
    not_ours.write_bytes(bytes(100))
    with pytest.raises(gr.Error, match="Cannot use that calibration"):
        demo.load_calibration(one, not_ours)


def test_an_operators_calibration_serves_every_session(models, model, speech_clips, tmp_path):
    own = Demo(models)
    session, *_ = own.calibrate(Session(model), people_zip(speech_clips, tmp_path / "p.zip"), False, 5)
    shared = Demo(models, calibration=session.calibration)
    assert shared.encoder(Session(model)).adaptation.people == 3
    assert shared.reset_calibration(Session(model))[1] == "Using the app's calibration."
