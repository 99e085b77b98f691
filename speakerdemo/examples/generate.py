"""Regenerate the demo's example clips with espeak-ng: ``python -m speakerdemo.examples.generate``.

The examples are synthetic on purpose: the project ships no recorded speech of real people.
Two clips share a voice (same "speaker", different sentences); the others use other voices.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

CLIPS = {
    "alex_1.wav": (
        "en-us+Alex",
        45,
        "The birch canoe slid on the smooth planks, and the boy glued the sheet to the dark blue background.",
    ),
    "alex_2.wav": (
        "en-us+Alex",
        45,
        "It is easy to tell the depth of a well when the rope is long enough and the water is clear.",
    ),
    "annie_1.wav": (
        "en-gb+Annie",
        70,
        "These days a chicken leg is a rare dish, and rice is often served in round bowls.",
    ),
    "klaus_de.wav": (
        "de+Klaus",
        35,
        "Der schnelle braune Fuchs springt über den faulen Hund, und die Sonne scheint heute sehr hell.",
    ),
}


def main() -> None:
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is not installed (Debian: apt-get install espeak-ng).")
    folder = Path(__file__).parent
    for name, (voice, pitch, text) in CLIPS.items():
        subprocess.run(
            ["espeak-ng", "-v", voice, "-p", str(pitch), "-s", "150", "-w", str(folder / name), text], check=True
        )
        print(f"wrote {folder / name}")


if __name__ == "__main__":
    main()
