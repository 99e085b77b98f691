"""What the app says, in words: verdicts and their rates, clip warnings, evidence, who spoke when.

Functions of library results alone (an Embedding, a Calibration, a ClipEvidence, a Diarization),
so the web app (:mod:`speakerdemo.ui`) and its tests read the same sentences, and a change of
wording is one place.
"""

from __future__ import annotations

import math

import plotly.graph_objects as go

from .adapt import Adaptation
from .cohort import Cohort
from .conditions import DESCRIPTIONS
from .diarize import Diarization
from .encoder import Embedding
from .evidence import ClipEvidence, WindowMap
from .plots import score_distribution_figure
from .scoring import Calibration
from .verdict import DIFFERENT, SAME, UNCERTAIN, Verdict, curve_for, odds

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


HEADINGS = {SAME: "## ✅ Same speaker", DIFFERENT: "## ❌ Different speakers", UNCERTAIN: "## ❔ Uncertain"}


def verdict_readout(
    verdict: Verdict | None, calibration: Calibration | None, cohort: Cohort | None = None
) -> tuple[str, go.Figure]:
    """The decision first, then one sentence of why, what weakens it and what would help, then
    the numbers: the score, the uncertain band, the rates for clips like these and over all, the
    odds; and the score densities of the pair's kind of clip with the pair marked."""
    if verdict is None:
        threshold = calibration.threshold if calibration is not None else 0.0
        return "Give two clips and press **Verify**.", score_distribution_figure(calibration, 0.0, threshold)
    curve = curve_for(calibration, verdict.kind)
    kind_words = DESCRIPTIONS.get(verdict.kind or "", "the calibration trials")
    low, high = verdict.band
    lines = [HEADINGS[verdict.decision], _why(verdict, curve, kind_words)]
    if verdict.reasons:
        lines.append("⚠️ What weakens the evidence: " + "; ".join(verdict.reasons) + ".")
    if verdict.advice:
        lines.append("💡 What would help: " + "; ".join(verdict.advice) + ".")
    shift = calibration.shifts.get(verdict.kind or "", 0.0) if calibration is not None else 0.0
    words = score_words(verdict.score, shift, verdict.kind, cohort)
    numbers = f"{words[0].upper()}{words[1:]} against threshold **{verdict.threshold:.3f}**."
    if high > low:
        numbers += f" Scores from {low:.3f} to {high:.3f} are left uncertain for {kind_words}."
    lines.append(numbers)
    if calibration is None:
        lines.append("This checkpoint has no calibration: the threshold's error rates are unknown.")
        return "\n\n".join(lines), score_distribution_figure(None, verdict.score, verdict.threshold)
    if verdict.kind in calibration.conditions:
        lines.append(
            f"For {kind_words}, like these two, about **{100 * verdict.far:.1f} %** of "
            f"different-speaker pairs pass at this threshold (false accepts) and **{100 * verdict.frr:.1f} %** of "
            "same-speaker pairs are rejected (false rejects)."
        )
    far, frr = calibration.rates_at(verdict.threshold)
    overall = "Over all" if verdict.kind in calibration.conditions else "On"
    lines.append(
        f"{overall} {calibration.trials or 'the calibration trials'}: "
        f"about **{100 * far:.1f} %** false accepts and **{100 * frr:.1f} %** false rejects. "
        f"The default {calibration.threshold:.3f} is {calibration.rule} "
        f"(EER {100 * calibration.eer:.2f} %)."
    )
    if verdict.llr is not None:
        lines.append(f"A score like this is {odds(verdict.llr)} (log-likelihood ratio {verdict.llr:.1f}).")
    title = f"Scores of held-out speakers' pairs: {kind_words}" if verdict.kind in calibration.conditions else None
    figure = score_distribution_figure(curve, verdict.score, verdict.threshold, verdict.band, title)
    return "\n\n".join(lines), figure


def _why(verdict: Verdict, curve: Calibration | None, kind_words: str) -> str:
    """One sentence: why this decision."""
    low, high = verdict.band
    if curve is None:
        side = "reaches" if verdict.same else "falls below"
        return f"The score {side} the threshold; how often that is wrong for such clips is unknown."
    if verdict.decision == SAME:
        far = curve.rates_at(high)[0]
        return (
            f"The score lies above {high:.3f}, which about {100 * far:.1f} % of different-speaker pairs of "
            f"{kind_words} reach."
        )
    if verdict.decision == DIFFERENT:
        frr = curve.rates_at(low)[1]
        return (
            f"The score lies below {low:.3f}, where about {100 * frr:.1f} % of same-speaker pairs of {kind_words} fall."
        )
    return (
        f"The score lies between {low:.3f} and {high:.3f}, where same- and different-speaker pairs of "
        f"{kind_words} overlap: neither answer would be safe."
    )


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


APP_USES = "Verify, Identify and Who spoke when now use it in this browser session; download it to use it again."


def adaptation_summary(report: Adaptation, base_threshold: float, uses: str = APP_USES) -> str:
    """What calibrating on the user's people measured, and ``uses``: where it now applies."""
    far_low, far_high = report.far_interval
    same_pairs, other_pairs = len(report.same_scores), len(report.other_scores)
    frr = float((report.same_scores < report.threshold).mean())
    lines = [
        f"**Calibrated on your {report.people} people** ({report.clips} clips: {same_pairs} same-person and "
        f"{other_pairs} different-person pairs). {uses}",
        f"Threshold **{report.threshold:.3f}** (the model's own: {base_threshold:.3f}): at it, about "
        f"{100 * report.target_far:g} % of your different-person pairs pass (with other people of your setting, "
        f"somewhere between {100 * far_low:.0f} and {100 * far_high:.0f} %: a bootstrap over your people) and "
        f"{100 * frr:.0f} % of your same-person pairs are rejected. EER on your pairs: {100 * report.eer:.1f} %.",
    ]
    lines += [f"⚠️ {w}" for w in report.warnings]
    return "\n\n".join(lines)
