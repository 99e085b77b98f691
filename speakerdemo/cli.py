"""``speakerdemo embed | verify | enroll | identify``: the toolkit from a shell; ``--help`` of each says more.

The command line only: each command asks the library what the web app asks it (``SpeakerEncoder``
for embeddings, :mod:`speakerdemo.conditions` for the score of a pair or a query and its kind of
clip, ``Gallery`` for enrolment and the open-set ranking), so a pair gets the same answer in a
shell as in the browser, and prints the answer for a person or, with ``--json``, for a program.
A mistake the user can fix (arguments, audio, a gallery or checkpoint) is one line on stderr,
``speakerdemo: error: ...`` naming the file, and exit status 2; anything else is exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from tqdm import tqdm

from .adapt import MAX_FILE_BYTES as MAX_CALIBRATION_BYTES
from .adapt import AdaptationError, from_bytes, to_bytes
from .archive import ArchiveError, people_from_zip
from .atomic import atomic_write, atomic_write_bytes
from .audio import AUDIO_SUFFIXES, MAX_SECONDS, AudioError
from .checkpoint import BACKENDS, CHECKPOINTS_DIR, CONFIG_FILE, DEFAULT_MODEL, CheckpointError
from .conditions import DESCRIPTIONS, clip_condition
from .diarize import diarize
from .encoder import Embedding, SpeakerEncoder
from .gallery import Gallery, GalleryError
from .readout import adaptation_summary

PROG = "speakerdemo"
EMBED_BATCH_FILES = 16  # files per embed_batch call: the progress bar's step; the encoder bounds memory itself
TOP_K = 5  # speakers an identification lists, as the app's slider starts
EXIT_OK, EXIT_UNEXPECTED, EXIT_BAD_INPUT = 0, 1, 2
EXIT_STATUS = (
    "exit status: 0 when the command answered (either answer of verify), 2 for bad input (arguments, "
    "missing, unreadable or unusable audio, a bad gallery or checkpoint), 1 for anything unexpected"
)


class UsageError(ValueError):
    """A mistake in what the user asked for (a missing file, a bad option value): exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is the one-line error every other bad input gets, with status 2."""

    def error(self, message: str) -> NoReturn:
        fail(f"{message} (see `{self.prog} --help`)")


def fail(message: str, status: int = EXIT_BAD_INPUT) -> NoReturn:
    """Print ``speakerdemo: error: message`` as one line on stderr and exit with ``status``."""
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(status)


# ---------------------------------------------------------------------- what every command shares
def add_model_options(parser: argparse.ArgumentParser) -> None:
    """--model, --device, --backend, --max-seconds: which encoder runs where, as app.py takes them."""
    parser.add_argument(
        "--model",
        default=os.environ.get("SPEAKERDEMO_MODEL", DEFAULT_MODEL),
        help="checkpoint name in checkpoints/, a folder, or a Hub repo id (default: $SPEAKERDEMO_MODEL or %(default)s)",
    )
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="what runs the encoder on the CPU: ONNX Runtime when the checkpoint has model.onnx "
        "(auto: its int8 copy when there is one), or torch",
    )
    parser.add_argument(
        "--max-seconds", type=float, default=MAX_SECONDS, help="longest clip accepted (default: %(default)g)"
    )
    parser.add_argument(
        "--calibration",
        type=Path,
        metavar="FILE",
        help="a calibration on your own people (`speakerdemo calibrate`, or the app's Calibrate tab download)",
    )


def load_encoder(args: argparse.Namespace) -> SpeakerEncoder:
    """The encoder ``--model`` names: a checkpoint in ``checkpoints/`` by name, else a folder or a
    Hub repo id; a device this machine lacks is a usage mistake, not a stack trace from torch."""
    try:
        device = torch.device(args.device) if args.device else None
    except RuntimeError:
        raise UsageError(f"--device {args.device!r} is not a device (try cpu or cuda)") from None
    if device is not None and device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {args.device}: this machine has no CUDA device")
    shipped = CHECKPOINTS_DIR / args.model
    named = Path(args.model).name == args.model  # a bare name, not a path relative to where the user is
    source = str(shipped) if named and (shipped / CONFIG_FILE).is_file() else args.model
    calibration = getattr(args, "calibration", None)
    if calibration is not None and not calibration.is_file():
        raise UsageError(f"--calibration {calibration}: no such file")
    encoder = SpeakerEncoder.from_pretrained(source, device=device, backend=args.backend)
    if calibration is None:
        return encoder
    if calibration.stat().st_size > MAX_CALIBRATION_BYTES:
        raise UsageError(f"--calibration {calibration}: larger than a calibration file can be")
    try:
        return from_bytes(encoder, calibration.read_bytes())
    except AdaptationError as err:
        raise UsageError(f"--calibration {calibration}: {err}") from None


def existing_files(paths: Sequence[str]) -> list[Path]:
    """The paths as files, checked before the model loads, so that a typo costs no waiting."""
    for path in paths:
        if not Path(path).is_file():
            raise UsageError(f"{path}: no such file")
    return [Path(p) for p in paths]


def embed_files(encoder: SpeakerEncoder, paths: Sequence[Path], max_seconds: float) -> list[Embedding]:
    """Embed files in one batch; the AudioError of a bad one names its file (``embed_batch`` names
    the clip only when there are several)."""
    names = [str(p) for p in paths]
    try:
        return encoder.embed_batch(names, max_seconds=max_seconds, names=names)
    except AudioError as err:
        raise AudioError(f"{names[0]}: {err}" if len(names) == 1 else str(err)) from None


def clip_facts(path: Path, embedding: Embedding) -> dict[str, Any]:
    return {
        "path": str(path),
        "seconds": round(embedding.duration_seconds, 3),
        "speech_seconds": round(embedding.speech_seconds, 3),
    }


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


# ---------------------------------------------------------------------- embed
def add_embed_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="PATH",
        help=f"audio files, or folders searched (with their subfolders) for {' '.join(AUDIO_SUFFIXES)}",
    )
    parser.add_argument(
        "--output",
        "-o",
        required=True,
        type=Path,
        help="the .npz file to write (NumPy only; no parquet): arrays 'paths' (N,), 'vectors' (N, D) "
        "and 'speech_seconds' (N,), one row per embedded file in the order listed",
    )
    parser.add_argument(
        "--skip-bad",
        action="store_true",
        help="report a file that cannot be embedded and go on (the count is given at the end) "
        "instead of stopping with exit status 2",
    )
    parser.add_argument(
        "--batch-size", type=int, default=EMBED_BATCH_FILES, help="files per encoder call (default: %(default)s)"
    )


def audio_files(inputs: Sequence[str]) -> list[Path]:
    """The files named and the audio files under the folders named (sorted), each once."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                raise UsageError(f"{item}: no audio files ({' '.join(AUDIO_SUFFIXES)}) in this folder")
            files += found
        elif item.is_file():
            files.append(item)
        else:
            raise UsageError(f"{item}: no such file or folder")
    return list(dict.fromkeys(files))


def embed_skipping_bad(
    encoder: SpeakerEncoder, paths: Sequence[Path], max_seconds: float, report: Callable[[str], None]
) -> list[tuple[Path, Embedding]]:
    """Embed ``paths`` in one batch, less the files that cannot be embedded, each told to ``report``.

    ``embed_batch`` stops at the first bad clip and names it (:func:`embed_files`): that file is
    dropped and the rest embedded again, so the good files are embedded together, exactly as a
    batch of only them would be (not one by one: with the int8 network a clip's vector moves in the
    fourth decimal with the company it is batched in).
    """
    remaining = list(paths)
    while remaining:
        try:
            return list(zip(remaining, embed_files(encoder, remaining, max_seconds)))
        except AudioError as err:
            bad = next((p for p in remaining if str(err).startswith(f"{p}: ")), None)
            if bad is None:
                raise
            report(f"{PROG}: skipped {err}")
            remaining.remove(bad)
    return []


def run_embed(args: argparse.Namespace) -> int:
    """Embed every file in batches; a bad file stops the run, or with --skip-bad is reported and
    skipped. The .npz is written atomically, and only when something was embedded."""
    output: Path = args.output
    if output.suffix != ".npz":
        raise UsageError(f"--output {output}: the file must end in .npz (embeddings are written as NumPy .npz)")
    if output.is_dir() or not output.parent.is_dir():
        raise UsageError(f"--output {output}: not a file in an existing folder")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    files = audio_files(args.inputs)
    encoder = load_encoder(args)
    done: list[tuple[Path, Embedding]] = []
    bad = 0
    with tqdm(total=len(files), unit="file", desc="embedding", file=sys.stderr, disable=None) as bar:
        for start in range(0, len(files), args.batch_size):
            batch = files[start : start + args.batch_size]
            if args.skip_bad:
                embedded = embed_skipping_bad(
                    encoder, batch, args.max_seconds, lambda line: bar.write(line, file=sys.stderr)
                )
            else:
                embedded = list(zip(batch, embed_files(encoder, batch, args.max_seconds)))
            done += embedded
            bad += len(batch) - len(embedded)
            bar.update(len(batch))
    if not done:
        raise UsageError(f"none of the {len(files)} file(s) could be embedded")

    def write(f: Any) -> None:
        np.savez(
            f,
            paths=np.array([str(p) for p, _ in done]),
            vectors=np.stack([e.vector for _, e in done]).astype(np.float32),
            speech_seconds=np.array([e.speech_seconds for _, e in done]),
        )

    atomic_write(output, write)
    skipped = f"; skipped {bad} bad file(s)" if bad else ""
    print(f"embedded {len(done)} file(s) into {output}{skipped}", file=sys.stderr)
    return EXIT_OK


# ---------------------------------------------------------------------- verify
def add_verify_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", metavar="A", help="an audio file")
    parser.add_argument("b", metavar="B", help="another audio file")
    parser.add_argument("--threshold", type=float, help="decision threshold (default: the checkpoint's calibrated one)")
    parser.add_argument("--json", action="store_true", help="print the answer as JSON on stdout")


def run_verify(args: argparse.Namespace) -> int:
    """Same speaker, different speakers or uncertain, as the app's Verify tab decides
    (:meth:`SpeakerEncoder.verify`), with why, what would help and what the threshold means for
    clips of that kind and over all the calibration trials. Exit status 0 for every answer."""
    paths = existing_files([args.a, args.b])
    encoder = load_encoder(args)
    a, b = embed_files(encoder, paths, args.max_seconds)
    verdict = encoder.verify(a, b, args.threshold)
    calibration = encoder.calibration
    overall_far, overall_frr = calibration.rates_at(verdict.threshold) if calibration is not None else (None, None)
    kind = verdict.kind or ""
    if args.json:
        print_json(
            {
                "decision": verdict.decision,
                "same_speaker": verdict.same,
                "score": verdict.score,
                "threshold": verdict.threshold,
                "uncertain_between": list(verdict.band),
                "log_likelihood_ratio": verdict.llr,
                "reasons": list(verdict.reasons),
                "advice": list(verdict.advice),
                "condition": verdict.kind,
                "condition_description": DESCRIPTIONS.get(kind, kind),
                "far": verdict.far,
                "frr": verdict.frr,
                "overall_far": overall_far,
                "overall_frr": overall_frr,
                "calibration_trials": calibration.trials if calibration is not None else None,
                "clips": [clip_facts(paths[0], a), clip_facts(paths[1], b)],
            }
        )
        return EXIT_OK
    words = {"same": "same speaker", "different": "different speakers", "uncertain": "uncertain"}[verdict.decision]
    low, high = verdict.band
    band = f", uncertain from {low:.3f} to {high:.3f}" if high > low else ""
    print(f"{words}: score {verdict.score:.3f}, threshold {verdict.threshold:.3f}{band}")
    if verdict.reasons:
        print("what weakens the evidence: " + "; ".join(verdict.reasons))
    if verdict.advice:
        print("what would help: " + "; ".join(verdict.advice))
    if verdict.far is not None and kind in calibration.conditions:
        print(
            f"for {DESCRIPTIONS.get(kind, kind)} ({kind}), like these: about {100 * verdict.far:.1f} % of "
            f"different-speaker pairs pass at this threshold (false accepts), {100 * verdict.frr:.1f} % of "
            "same-speaker pairs are rejected (false rejects)"
        )
    if calibration is None:
        print("this checkpoint has no calibration: the threshold's error rates are unknown")
    else:
        print(
            f"over all {calibration.trials or 'the calibration trials'}: about {100 * overall_far:.1f} % false "
            f"accepts, {100 * overall_frr:.1f} % false rejects"
        )
    return EXIT_OK


# ---------------------------------------------------------------------- enroll / identify
def add_gallery_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--gallery", "-g", required=True, type=Path, metavar="G", help=what)


def read_gallery(path: Path) -> Gallery:
    """The gallery file at ``path``, fully validated (read before the slow model load), naming the
    file in every error."""
    try:
        return Gallery.load(path)
    except GalleryError as err:
        raise GalleryError(f"{path}: {err}") from None


def check_fits(gallery: Gallery, path: Path, encoder: SpeakerEncoder) -> None:
    """Refuse a gallery of another model's embeddings: its scores against this model's mean nothing."""
    dim = encoder.model.embed_dim
    if gallery.dim not in (None, dim):
        raise GalleryError(f"{path} holds {gallery.dim}-d embeddings; this model makes {dim}-d ones")


def add_enroll_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="the speaker's name (clips are added to an enrolled one)")
    parser.add_argument("clips", nargs="+", metavar="CLIP", help="audio files of the speaker")
    add_gallery_argument(parser, "the gallery file (.safetensors), created when missing, saved atomically")


def run_enroll(args: argparse.Namespace) -> int:
    """Add the clips' embeddings to NAME in the gallery; the file is replaced only once all is well."""
    paths = existing_files(args.clips)
    if args.gallery.is_dir() or not args.gallery.parent.is_dir():
        raise UsageError(f"--gallery {args.gallery}: not a file in an existing folder")
    gallery = read_gallery(args.gallery) if args.gallery.exists() else Gallery()
    encoder = load_encoder(args)
    check_fits(gallery, args.gallery, encoder)
    embeddings = embed_files(encoder, paths, args.max_seconds)
    try:
        gallery.enroll(args.name, [e.vector for e in embeddings])
    except ValueError as err:
        raise UsageError(str(err)) from None
    gallery.save(args.gallery)
    name = args.name.strip()
    print(
        f"enrolled {name} with {len(paths)} clip(s) ({gallery.clip_counts()[name]} in all); "
        f"{args.gallery} holds {len(gallery)} speaker(s)"
    )
    return EXIT_OK


def add_identify_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("clip", metavar="CLIP", help="an audio file of the speaker to identify")
    add_gallery_argument(parser, "the gallery file (.safetensors) written by `speakerdemo enroll`")
    parser.add_argument("--top-k", type=int, default=TOP_K, help="speakers to list (default: %(default)s)")
    parser.add_argument(
        "--threshold", type=float, help="score an answer must reach (default: the checkpoint's calibrated one)"
    )
    parser.add_argument("--json", action="store_true", help="print the answer as JSON on stdout")


def run_identify(args: argparse.Namespace) -> int:
    """Who of the enrolled speakers this is, as the app's Identify tab decides (open set: the best
    match's name if its score reaches the threshold raised for the gallery's size, else "unknown";
    :meth:`SpeakerEncoder.identify`), with the ranking."""
    if args.top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {args.top_k}")
    (path,) = existing_files([args.clip])
    if not args.gallery.is_file():
        raise UsageError(f"--gallery {args.gallery}: no such file (enroll speakers into it first)")
    gallery = read_gallery(args.gallery)
    if not len(gallery):
        raise GalleryError(f"{args.gallery}: no speakers enrolled")
    encoder = load_encoder(args)
    check_fits(gallery, args.gallery, encoder)
    (embedding,) = embed_files(encoder, [path], args.max_seconds)
    kind = clip_condition(embedding)
    ranking = encoder.identify(embedding, gallery, args.threshold, top_k=args.top_k)
    threshold = ranking.threshold
    if args.json:
        print_json(
            {
                "decision": ranking.best,
                "threshold": threshold,
                "condition": kind,
                "ranking": [{"name": m.name, "score": m.score} for m in ranking.matches],
                "clip": clip_facts(path, embedding),
            }
        )
        return EXIT_OK
    best = ranking.matches[0]
    print(f"{ranking.best}: best match {best.name} with score {best.score:.3f} (threshold {threshold:.3f})")
    for rank, match in enumerate(ranking.matches, 1):
        print(f"{rank:>3}. {match.name}  {match.score:.3f}")
    return EXIT_OK


# ---------------------------------------------------------------------- diarize
def add_diarize_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recording", metavar="FILE", help="a recording of any length (read in blocks)")
    parser.add_argument("--gallery", "-g", type=Path, metavar="G", help="enrolled speakers to name (optional)")
    parser.add_argument(
        "--speakers", type=int, metavar="N", help="how many speakers there are (default: found from the threshold)"
    )
    parser.add_argument("--rttm", type=Path, metavar="OUT", help="also write the segments as RTTM here")
    parser.add_argument("--json", action="store_true", help="print the segments as JSON on stdout")


def run_diarize(args: argparse.Namespace) -> int:
    """Who spoke when: speech windows named after the gallery's speakers where the calibrated
    decision says so, the others clustered into "Speaker 1, 2, ..."; segments and talk time."""
    (path,) = existing_files([args.recording])
    if args.speakers is not None and args.speakers < 1:
        raise UsageError(f"--speakers must be at least 1, got {args.speakers}")
    if args.rttm is not None and (args.rttm.is_dir() or not args.rttm.parent.is_dir()):
        raise UsageError(f"--rttm {args.rttm}: not a file in an existing folder")
    gallery = None
    if args.gallery is not None:
        if not args.gallery.is_file():
            raise UsageError(f"--gallery {args.gallery}: no such file (enroll speakers into it first)")
        gallery = read_gallery(args.gallery)
    encoder = load_encoder(args)
    if gallery is not None:
        check_fits(gallery, args.gallery, encoder)
    try:
        result = diarize(encoder, str(path), gallery=gallery, speakers=args.speakers)
    except ValueError as err:  # AudioError included: name the file
        raise UsageError(f"{path}: {err}") from None
    if args.rttm is not None:
        atomic_write_bytes(args.rttm, result.to_rttm(re.sub(r"\s+", "_", path.stem) or "recording").encode())
    if args.json:
        print_json(
            {
                "segments": [{"start": s.start, "end": s.end, "speaker": s.label} for s in result.segments],
                "talk_time": result.talk_time(),
                "named": sorted(result.named),
            }
        )
        return EXIT_OK
    for s in result.segments:
        print(f"{s.start:8.2f} {s.end:8.2f}  {s.label}")
    talk = ", ".join(f"{label} {seconds:.1f} s" for label, seconds in result.talk_time().items())
    print(f"talk time: {talk}", file=sys.stderr)
    return EXIT_OK


# ---------------------------------------------------------------------- calibrate
def add_calibrate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("people", metavar="DIR|ZIP", help="one folder of clips per person (a folder or a zip of them)")
    parser.add_argument(
        "--output", "-o", required=True, type=Path, metavar="FILE", help="the calibration file to write"
    )
    parser.add_argument(
        "--target-far", type=float, default=0.05, help="different-person pairs let through (default: %(default)g)"
    )


def run_calibrate(args: argparse.Namespace) -> int:
    """Calibrate on the user's own people (:meth:`SpeakerEncoder.adapt`); the file serves
    verify, identify and diarize (--calibration) and the app (app.py --calibration, or its upload)."""
    if getattr(args, "calibration", None) is not None:
        raise UsageError("--calibration: calibrate starts from the model's own calibration; leave it out")
    source = Path(args.people)
    if args.output.is_dir() or not args.output.parent.is_dir():
        raise UsageError(f"--output {args.output}: not a file in an existing folder")
    if source.is_dir():
        people = {
            folder.name: sorted(str(f) for f in folder.iterdir() if f.suffix.lower() in AUDIO_SUFFIXES)
            for folder in sorted(source.iterdir())
            if folder.is_dir() and not folder.name.startswith(".")
        }
    elif source.is_file():
        people = people_from_zip(str(source))
    else:
        raise UsageError(f"{source}: no such folder or zip")
    encoder = load_encoder(args)
    adapted = encoder.adapt(people, args.target_far)
    atomic_write_bytes(args.output, to_bytes(adapted))
    uses = f"verify, identify and diarize use it with --calibration {args.output}; app.py too."
    print(adaptation_summary(adapted.adaptation, encoder.threshold, uses).replace("**", ""))
    print(f"wrote {args.output}", file=sys.stderr)
    return EXIT_OK


# ---------------------------------------------------------------------- the command
# name -> (add its arguments, run it, one line of help). A new command is one pair of functions and
# one entry here.
COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int], str]] = {
    "embed": (add_embed_arguments, run_embed, "audio files or folders -> speaker embeddings in an .npz file"),
    "verify": (add_verify_arguments, run_verify, "are two clips the same speaker? (the app's decision)"),
    "enroll": (add_enroll_arguments, run_enroll, "add a speaker's clips to a gallery file"),
    "identify": (add_identify_arguments, run_identify, "who of a gallery's speakers is speaking? (open set)"),
    "diarize": (add_diarize_arguments, run_diarize, "who spoke when in a recording (named from a gallery)"),
    "calibrate": (add_calibrate_arguments, run_calibrate, "calibrate on clips of your own people (a folder each)"),
}


def build_parser() -> Parser:
    parser = Parser(prog=PROG, description=__doc__.splitlines()[0].replace("``", "`"), epilog=EXIT_STATUS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (add_arguments, run, summary) in COMMANDS.items():
        command = sub.add_parser(name, help=summary, description=run.__doc__, epilog=EXIT_STATUS)
        add_arguments(command)
        add_model_options(command)
        command.set_defaults(run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; exit status 0 when it answered, 2 for bad input, 1 for anything unexpected."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (UsageError, AudioError, GalleryError, CheckpointError, AdaptationError, ArchiveError) as err:
        fail(str(err))
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except Exception as err:  # a bug or a broken machine: still one line, never a traceback
        fail(f"unexpected {type(err).__name__}: {err}", EXIT_UNEXPECTED)
