"""The modalities, as a vocabulary: every layer from the features up decides on these names."""

from __future__ import annotations

from enum import StrEnum


class Modality(StrEnum):
    """The modalities, as typed identifiers (a ``StrEnum``: equal to its name, so ``"text"`` still matches).
    Decisions are taken on these; the prefix of every feature name is the value."""

    CONTENT = "content"  # speech / music / other / silence shares (Silero VAD + a tonality rule): runs first
    RECORDING = "recording"
    SPECTRAL = "spectral"
    PROSODIC = "prosodic"
    MUSIC = "music"  # harmony, rhythm, dynamics (librosa, the music extra): on request, see DEFAULT_ACOUSTIC
    VOICE = "voice"  # speaker-encoder embeddings, in spawned workers (torch): blindcheck.features.voice
    TEXT = "text"  # transcripts and their embeddings: blindcheck.features.text

    @property
    def acoustic(self) -> bool:
        """Computed per clip by an extractor in the extraction workers (not a spawned stage of its own)."""
        return self in ACOUSTIC

    @property
    def evidence(self) -> bool:
        """Described per side as evidence (blindcheck.analysis.metadata), never a blind classifier's input: what
        kind of audio a clip holds is a confound candidate in its own right, not an acoustic feature."""
        return self in EVIDENCE


ACOUSTIC = (Modality.CONTENT, Modality.RECORDING, Modality.SPECTRAL, Modality.PROSODIC, Modality.MUSIC)
"""Every modality computed per clip by an extractor in the extraction workers."""
DEFAULT_ACOUSTIC = (Modality.CONTENT, Modality.RECORDING, Modality.SPECTRAL, Modality.PROSODIC)
"""The acoustic modalities analysed when none is named (music only when asked for; content always, first)."""
EVIDENCE = (Modality.CONTENT,)
