"""What the app says, in words: verdicts and their rates, clip warnings, evidence, who spoke when.

Functions of library results alone (an Embedding, a Calibration, a ClipEvidence, a Diarization),
so the web app (:mod:`speakerdemo.ui`) and its tests read the same sentences, and a change of
wording is one place.
"""

from __future__ import annotations

import math

import plotly.graph_objects as go

from .cohort import Cohort
from .conditions import DESCRIPTIONS
from .diarize import Diarization
from .encoder import Embedding
from .evidence import ClipEvidence, WindowMap
from .plots import score_distribution_figure
from .scoring import Calibration

MIN_RELIABLE_SPEECH = 2.0  # seconds of speech under which a score is flagged as unreliable
MIN_SPEECH_SHARE = 0.3  # clips with less speech than this share are "mostly silence"
MAX_CLIPPED_SHARE = 0.001  # more clipped samples than this is flagged


def score_words(score: float, shift: float, kind: str | None, cohort: Cohort | None = None) -> str:
    """How a verdict names its score: the cosine, the cosine less the shift for the kind of clip,
    or the cosine normalised against the checkpoint's cohort."""
    if cohort is not None:
        return (
            f"score **{score:.3f}** (the cosine similarity normalised against {len(cohort.vectors)} cohort "
            "clips of other speakers: about how many spreads it lies above the closest strangers' scores)"
        )
    if not shift:
        return f"cosine similarity **{score:.3f}**"
    return (
        f"score **{score:.3f}** (the cosine similarity {score + shift:.3f} less {shift:.3f} "
        f"for {DESCRIPTIONS.get(kind or '', kind)})"
    )


def calibrated_verdict(
    calibration: Calibration | None,
    score: float | None,
    threshold: float,
    condition: str | None = None,
    cohort: Cohort | None = None,
) -> tuple[str, go.Figure]:
    """Decision and error rates for a score at a threshold, from the checkpoint's calibration alone.

    With a ``condition`` the checkpoint was calibrated on (a checkpoint calibrated across
    conditions), the rates and score distributions for clips like the user's come first: a
    threshold that lets few strangers through on clean 16-kHz speech can let many through on a
    phone line.
    """
    if score is None:
        return "Give two clips and press **Verify**.", score_distribution_figure(calibration, 0.0, threshold)
    same = score >= threshold
    shift = calibration.shifts.get(condition, 0.0) if calibration is not None and condition else 0.0
    words = score_words(score, shift, condition, cohort)
    lines = [
        f"## {'✅ Same speaker' if same else '❌ Different speakers'}",
        f"{words[0].upper()}{words[1:]} against threshold **{threshold:.3f}**.",
    ]
    if calibration is None:
        lines.append("This checkpoint has no calibration: the threshold's error rates are unknown.")
        return "\n\n".join(lines), score_distribution_figure(calibration, score, threshold)
    matched = calibration.conditions.get(condition) if condition else None
    if matched is not None:
        far, frr = matched.rates_at(threshold)
        lines.append(
            f"For {DESCRIPTIONS.get(condition, condition)}, like these two, about **{100 * far:.1f} %** of "
            f"different-speaker pairs pass at this threshold (false accepts) and **{100 * frr:.1f} %** of "
            "same-speaker pairs are rejected (false rejects)."
        )
    far, frr = calibration.rates_at(threshold)
    lines.append(
        f"{'Over all' if matched is not None else 'On'} {calibration.trials or 'the calibration trials'}: "
        f"about **{100 * far:.1f} %** false accepts and **{100 * frr:.1f} %** false rejects. "
        f"The default {calibration.threshold:.3f} is {calibration.rule} "
        f"(EER {100 * calibration.eer:.2f} %)."
    )
    return "\n\n".join(lines), score_distribution_figure(matched or calibration, score, threshold)


def clip_warnings(emb: Embedding) -> list[str]:
    """Why a score from this clip may be unreliable, in words."""
    warnings = []
    if emb.speech_seconds < MIN_RELIABLE_SPEECH:
        warnings.append(
            f"Only {emb.speech_seconds:.1f} s of speech: scores from clips under "
            f"{MIN_RELIABLE_SPEECH:.0f} s of speech are unreliable."
        )
    if emb.speech_seconds < MIN_SPEECH_SHARE * emb.duration_seconds:
        warnings.append(
            f"The clip is mostly silence ({emb.speech_seconds:.1f} s of speech in "
            f"{emb.duration_seconds:.1f} s); only the speech was used, but the score may be unreliable."
        )
    if emb.clipped_fraction > MAX_CLIPPED_SHARE:
        warnings.append(
            f"{100 * emb.clipped_fraction:.1f} % of the samples are clipped (recording too loud): "
            "the score may be unreliable."
        )
    return warnings


def clip_report(emb: Embedding) -> str:
    regions = ", ".join(f"{a:.2f}–{b:.2f} s" for a, b in emb.speech_regions[:8])
    more = " …" if len(emb.speech_regions) > 8 else ""
    lines = [f"**{emb.speech_seconds:.1f} s of speech** in {emb.duration_seconds:.1f} s. Speech: {regions}{more}"]
    lines += [f"⚠️ {w}" for w in clip_warnings(emb)]
    return "\n\n".join(lines)


def quality_report(clips: dict[str, ClipEvidence], windows: WindowMap | None = None) -> str:
    """A table of each clip's measured quality (one column per clip), then how many stretches of
    the two clips sound alike (with a window map), then what to do about the problems found."""
    names = list(clips)
    rows = {
        "speech": [f"{c.speech_seconds:.1f} s" for c in clips.values()],
        "signal-to-noise (estimate)": [f"{c.snr_db:.0f} dB" for c in clips.values()],
        "clipped samples": [f"{100 * c.clipped_fraction:.1f} %" for c in clips.values()],
        "band": ["phone (≤ 4 kHz)" if c.phone_band else "wideband" for c in clips.values()],
        "voices": ["two? ⚠️" if c.two_voices else "one" for c in clips.values()],
    }
    lines = ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines += [f"| {what} | " + " | ".join(values) + " |" for what, values in rows.items()]
    text = "\n".join(lines)
    if windows is not None:
        text += (
            f"\n\n**{100 * windows.agreeing_share:.0f} %** of the pairs of 1.5-s stretches "
            f"({len(windows.times_a)} of clip A × {len(windows.times_b)} of clip B) sound like one voice "
            f"(score ≥ {windows.agree:.2f}, where diarization joins stretches into one speaker)."
        )
    warnings = [f"⚠️ **{name}:** {w}" for name, clip in clips.items() for w in clip.warnings()]
    return "\n\n".join([text, *warnings])


def cohesion_note(name: str, scores: list[float], left_out: list[int], threshold: float) -> str:
    """Each new enrolment clip's score against the speaker's other clips, outliers flagged."""
    if all(math.isnan(s) for s in scores):
        return ""
    parts = []
    for i, s in enumerate(scores):
        if math.isnan(s):
            continue
        mark = " ⚠️ left out" if i in left_out else (" ⚠️" if s < threshold else "")
        parts.append(f"clip {i + 1}: {s:.2f}{mark}")
    text = f"Each clip against {name}'s other clips (threshold {threshold:.2f}): " + ", ".join(parts) + "."
    if left_out:
        text += (
            f" Clips scoring below the threshold against the others are another voice or a bad recording and "
            f"would pull {name}'s centroid away from them; tick *Enroll clips that do not match too* to keep them."
        )
    elif any(s < threshold for s in scores if not math.isnan(s)):
        text += " ⚠️ These clips do not agree well with each other: check that they are all the same person."
    return text


def diarization_summary(result: Diarization) -> str:
    """One sentence of who was found, then talk time per speaker."""
    talk = result.talk_time()
    total = sum(talk.values())
    named = [s for s in result.speakers if s in result.named]
    found = f"**{len(talk)} speaker(s)** in {result.duration:.1f} s ({total:.1f} s of speech)"
    if named:
        found += f"; enrolled: {', '.join(f'**{n}**' for n in named)}"
    shares = ", ".join(f"{label} {seconds:.1f} s ({100 * seconds / total:.0f} %)" for label, seconds in talk.items())
    return f"{found}.\n\nTalk time: {shares}."
