"""Which modalities a run analyses: one rule for the CLI and the Python API, so one manifest gets one verdict.

- Nothing requested: the default acoustic modalities (recording, spectral, prosodic; ``music`` runs only when
  named), plus ``voice`` when its extra is installed, plus ``text`` when it can run here (transcripts given, or the
  ASR and embedding packages installed, or, under ``transcripts="auto"`` or ``"none"``, a caption-like text source
  and the embedding package: see :func:`blindcheck.features.text.text_unavailable`). When it cannot, text is
  skipped *only* for ``transcripts="auto"``, and the skip is reported in the returned note; an explicit
  ``transcripts="asr"`` or ``"given"`` that cannot be met is an error naming the missing extra.
- A list requested: exactly those; an unknown name, or a ``text``, ``voice`` or ``music`` that cannot run here (its
  extra missing), is an error.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from blindcheck.errors import BlindcheckError, MissingDependencyError
from blindcheck.features.modalities import Modality


@dataclass(frozen=True)
class ModalityChoice:
    modalities: list[str]
    note: str | None = None  # why an available-by-default modality was left out (text under auto)


def known_modalities() -> list[Modality]:
    return list(Modality)


def choose_modalities(table: pd.DataFrame, requested: list[str] | str | None, text_options=None) -> ModalityChoice:
    """The modalities to analyse for a manifest ``table`` (see the module docstring).

    ``requested``: None (the default rule), a list of names, or a comma-separated string. ``text_options``:
    :class:`blindcheck.features.text.TextOptions` (default: ``transcripts="auto"`` with the bundled models).
    """
    from blindcheck.features import default_acoustic_modalities
    from blindcheck.features.text import TextOptions, text_unavailable

    options = text_options or TextOptions()
    known = known_modalities()
    if isinstance(requested, str):
        requested = [m.strip() for m in requested.split(",") if m.strip()]
    if not requested:
        from blindcheck.features.voice import voice_unavailable

        chosen, notes = list(default_acoustic_modalities()), []
        why_voice = voice_unavailable()
        if why_voice is None:
            chosen.append("voice")
        else:
            notes.append(f"voice modality skipped: {why_voice}")
        why = text_unavailable(table, options)
        if why is None:
            chosen.append("text")
        elif options.transcripts != "auto":
            raise MissingDependencyError(f"transcripts '{options.transcripts}' asked for, but the text modality "
                                         f"cannot run: {why}")
        else:
            notes.append(f"text modality skipped (transcripts auto): {why}")
        return ModalityChoice(chosen, note="; ".join(notes) or None)
    unknown = [m for m in requested if m not in known]
    if unknown:
        raise BlindcheckError(f"unknown modality '{unknown[0]}' (known: {', '.join(known)})")
    if len(set(requested)) != len(requested):
        raise BlindcheckError(f"modality named twice: {', '.join(requested)}")
    if "voice" in requested:
        from blindcheck.features.voice import voice_unavailable

        why = voice_unavailable()
        if why:
            raise MissingDependencyError(f"voice modality asked for but it cannot run: {why}")
    if "music" in requested:
        from blindcheck.features.music import music_unavailable

        why = music_unavailable()
        if why:
            raise MissingDependencyError(f"music modality asked for but it cannot run: {why}")
    if "text" in requested:
        why = text_unavailable(table, options)
        if why:
            raise MissingDependencyError(f"text modality asked for but it cannot run: {why}")
    return ModalityChoice(list(requested))
