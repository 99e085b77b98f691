"""speakerdemo: speaker embeddings, verification and identification, with a Gradio demo.

Data flows one way: audio -> features -> encoder -> embedding -> scores -> decision -> UI.

>>> from speakerdemo import SpeakerEncoder
>>> encoder = SpeakerEncoder.from_pretrained("checkpoints/ecapa-speechocean")
>>> encoder.verify("a.wav", "b.wav").decision   # "same", "different" or "uncertain"
"""

from .adapt import Adaptation, AdaptationError
from .audio import AudioError, detect_speech, load_audio, speech_regions
from .checkpoint import CheckpointError
from .encoder import Embedding, SpeakerEncoder
from .gallery import Gallery, GalleryError
from .metrics import compute_eer, compute_min_dcf
from .scoring import Calibration, cosine
from .verdict import Verdict

__all__ = [
    "Adaptation",
    "AdaptationError",
    "AudioError",
    "Calibration",
    "CheckpointError",
    "Embedding",
    "Gallery",
    "GalleryError",
    "SpeakerEncoder",
    "Verdict",
    "compute_eer",
    "compute_min_dcf",
    "cosine",
    "detect_speech",
    "load_audio",
    "speech_regions",
]
