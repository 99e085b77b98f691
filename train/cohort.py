"""The score cohort ``python -m train calibrate --cohort`` stores in a checkpoint: clips of the
recipe's own training speakers in every recording condition of :mod:`train.condition_trials`.

A cohort must hold clips like the ones it normalises: a phone-band clip finds its closest
strangers among phone-band cohort clips, a clip from a noisy room among noisy ones. Measured on
the shipped checkpoint's dev half (2026-12-02): a cohort without the phone-line copies lets the
phone condition's strangers score high and set a threshold that rejects half the clean
same-speaker pairs; one without speechocean762's speakers let 13.9 % of that corpus' strangers
through instead of 3.5 %. So every condition is in, for every training corpus of the recipe.
The held-out speakers (the dev and test halves) never are.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from speakerdemo.cohort import Cohort
from speakerdemo.encoder import SpeakerEncoder

from .condition_trials import condition_trials
from .config import load_config
from .data import DataError, Utterance
from .prepare import load_source
from .sources import source_of
from .trials import embed_arrays

RECORDINGS_PER_SPEAKER = 2  # of each training speaker: a long LibriSpeech reading, two short prompts
CLIPS_PER_CONDITION = 2  # of each speaker in each condition: ~3,000 clips for the shipped recipe


def training_recordings(recipe: Path) -> list[Utterance]:
    """The first ``RECORDINGS_PER_SPEAKER`` recordings of every training speaker of the recipe's
    labelled audio sources (its held-out speakers excluded, drawn as ``fit`` draws them)."""
    cfg = load_config(recipe, [])
    recordings: list[Utterance] = []
    for spec in cfg["data"]["sources"]:
        if not (source_of(spec).audio and source_of(spec).labelled):
            continue
        taken: dict[str, int] = {}
        for utt in load_source(spec, cfg["seed"])[0]:
            if taken.get(utt.speaker, 0) < RECORDINGS_PER_SPEAKER:
                taken[utt.speaker] = taken.get(utt.speaker, 0) + 1
                recordings.append(utt)
    if not recordings:
        raise DataError(f"{recipe} trains on no audio recordings to draw a score cohort from.")
    return recordings


def cohort_clips(recordings: Sequence[Utterance]) -> list[np.ndarray]:
    """At most ``CLIPS_PER_CONDITION`` clips of each speaker in each recording condition."""
    clips: list[np.ndarray] = []
    for trials in condition_trials(recordings).values():
        taken: dict[str, int] = {}
        for speaker, clip in zip(trials.speakers, trials.segments):
            if taken.get(speaker, 0) < CLIPS_PER_CONDITION:
                taken[speaker] = taken.get(speaker, 0) + 1
                clips.append(clip)
    return clips


def build_cohort(encoder: SpeakerEncoder, recipe: Path) -> Cohort:
    """The encoder's embeddings of the recipe's cohort clips (floors not yet set:
    :meth:`speakerdemo.cohort.Cohort.with_floors`)."""
    return Cohort(embed_arrays(encoder, cohort_clips(training_recordings(recipe)), desc="cohort"))
