"""speakerdemo: speaker embeddings, verification and identification, with a Gradio demo.

Data flows one way: audio -> features -> encoder -> embedding -> scores -> UI.

>>> from speakerdemo import SpeakerEncoder
>>> encoder = SpeakerEncoder.from_pretrained("checkpoints/ecapa-speechocean")
>>> a, b = encoder.embed("a.wav"), encoder.embed("b.wav")
>>> encoder.score(a, b) >= encoder.threshold   # same speaker?
"""

from .audio import AudioError, detect_speech, load_audio, speech_regions
from .checkpoint import CheckpointError
from .encoder import Embedding, SpeakerEncoder
from .gallery import Gallery, GalleryError
from .metrics import compute_eer, compute_min_dcf
from .scoring import Calibration, cosine

__all__ = [
    "AudioError",
    "Calibration",
    "CheckpointError",
    "Embedding",
    "Gallery",
    "GalleryError",
    "SpeakerEncoder",
    "compute_eer",
    "compute_min_dcf",
    "cosine",
    "detect_speech",
    "load_audio",
    "speech_regions",
]
