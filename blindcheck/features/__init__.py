"""Model-free feature extractors, one module per modality, behind one small protocol.

An extractor has a ``name`` (the modality, used as the feature-name prefix), a ``version`` (bumped whenever
its output changes: part of the cache key), a ``config()`` of the parameters that change its output (also
part of the cache key), a fixed ``feature_names()`` list, and ``extract(clip) -> dict[str, float]`` returning
un-prefixed names. Values that cannot be computed are NaN, and the extractor appends the reason to
``clip.notes``; an exception means the whole modality failed for that clip (recorded in the errors table).
"""

from __future__ import annotations

import hashlib
import json
from typing import Protocol, runtime_checkable

from blindcheck.features.modalities import ACOUSTIC, DEFAULT_ACOUSTIC, Modality
from blindcheck.inputs.audio import Clip

__all__ = ["ACOUSTIC", "DEFAULT_ACOUSTIC", "Extractor", "Modality", "acoustic_modalities", "cache_tag",
           "default_acoustic_modalities", "get_extractor"]


@runtime_checkable
class Extractor(Protocol):
    name: str
    version: str

    def config(self) -> dict: ...

    def feature_names(self) -> list[str]: ...

    def extract(self, clip: Clip) -> dict[str, float]: ...


def cache_tag(ext: Extractor) -> str:
    """Directory-safe identity of an extractor's output: name, version and a hash of its config."""
    cfg = hashlib.blake2b(json.dumps(ext.config(), sort_keys=True).encode(), digest_size=4).hexdigest()
    return f"{ext.name}-v{ext.version}-{cfg}"


def acoustic_modalities() -> list[Modality]:
    """Every modality with a per-clip extractor run by the extraction workers."""
    return list(ACOUSTIC)


def default_acoustic_modalities() -> list[Modality]:
    """The acoustic modalities analysed when none is named."""
    return list(DEFAULT_ACOUSTIC)


def get_extractor(name: str) -> Extractor:
    """Instantiate a registered extractor by modality name."""
    name = Modality(name) if name in Modality.__members__.values() else name
    if name == Modality.CONTENT:  # onnxruntime is imported on the first clip (the content extra)
        from blindcheck.features.content import ContentExtractor

        return ContentExtractor()
    if name == Modality.RECORDING:
        from blindcheck.features.recording import RecordingExtractor

        return RecordingExtractor()
    if name == Modality.SPECTRAL:
        from blindcheck.features.spectral import SpectralExtractor

        return SpectralExtractor()
    if name == Modality.PROSODIC:
        from blindcheck.features.prosodic import ProsodicExtractor

        return ProsodicExtractor()
    if name == Modality.MUSIC:  # librosa is imported inside extract (the music extra)
        from blindcheck.features.music import MusicExtractor

        return MusicExtractor(content_gate=True)  # no music features on clips without music
    if name == Modality.VOICE:  # runs in spawned workers (torch), see blindcheck.features.voice.extract_voice
        from blindcheck.features.voice import VoiceExtractor

        return VoiceExtractor()
    raise KeyError(f"unknown modality '{name}' (known: {', '.join(acoustic_modalities())})")
