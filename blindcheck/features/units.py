"""The unit of every feature, from its definition: what a value means, for the reasons' texts and the figures' axes.

Each extractor defines its features in its own module (the docstrings of :mod:`~blindcheck.features.recording`,
:mod:`~blindcheck.features.spectral`, :mod:`~blindcheck.features.prosodic`, :mod:`~blindcheck.features.music`,
:mod:`~blindcheck.features.content`, :mod:`~blindcheck.features.text`, :mod:`~blindcheck.features.voice`); the
table here says, for each of those names, in which unit its value is stored. A name the table does not hold (a
feature added later, a metadata column) gets its unit from the naming conventions (``_hz``, ``_s``, ``_db``,
``_dbfs``, ``_lufs``, ``_ratio``, ``_fraction``, ``_share``, ``_st``, ...), and no unit when none applies.

A :class:`Unit` has a ``symbol`` (printed after a value: ``"Hz"``, ``"dBFS"``, ``"%"``, or empty) and an
``axis`` text (what a figure's axis label puts in parentheses: ``"Hz"``, ``"semitones"``, ``"0/1"``, or empty for
a unitless quantity), and ``scale``, the factor from the stored value to the unit (100 for a share stored as a
fraction and shown in %).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Unit", "axis_label", "unit_of"]


@dataclass(frozen=True)
class Unit:
    symbol: str  # after a value ("Hz", "dBFS", "%", "st"); "" when a value is printed bare
    axis: str  # in an axis label's parentheses ("Hz", "semitones", "count", "0/1"); "" for a unitless quantity
    scale: float = 1.0  # value in the unit = stored value x scale
    explicit: bool = True  # from the table of the extractors' definitions (False: from the naming conventions)


HZ = Unit("Hz", "Hz")
SECONDS = Unit("s", "s")
DBFS = Unit("dBFS", "dBFS")
LUFS = Unit("LUFS", "LUFS")
LU = Unit("LU", "LU")
DB = Unit("dB", "dB")
DB_PER_KHZ = Unit("dB/kHz", "dB/kHz")
PERCENT = Unit("%", "%", 100.0)
SEMITONES = Unit("st", "semitones")
SEMITONES_PER_S = Unit("st/s", "semitones/s")
PER_SECOND = Unit("/s", "per second")
SYLLABLES_PER_S = Unit("syllables/s", "syllables/s")
BPM = Unit("BPM", "BPM")
BITS = Unit("bits", "bits")
COUNT = Unit("", "count")
CHARACTERS = Unit("", "characters")
INDICATOR = Unit("", "0/1")
FULL_SCALE = Unit("", "full scale")  # a sample value: 1 is digital full scale
RATIO = Unit("", "ratio")
UNITLESS = Unit("", "")

# (modality, pattern of the name after the modality prefix, unit): the features each extractor defines.
_TABLE: dict[str, list[tuple[str, Unit]]] = {
    "recording": [
        (r"sample_rate|effective_bandwidth_hz|noise_centroid_hz", HZ),
        (r"duration_s|leading_silence_s|trailing_silence_s", SECONDS),
        (r"peak_dbfs|rms_dbfs|noise_floor_dbfs", DBFS),
        (r"loudness_lufs", LUFS),
        (r"crest_factor_db|snr_db|side_mid_db|channel_level_diff_db|noise_band_\d+_db", DB),  # band: re their mean
        (r"noise_slope_db_khz", DB_PER_KHZ),
        (r"bandwidth_ratio|clipping_fraction|silence_ratio", PERCENT),  # of Nyquist / of samples / of frames
        (r"dc_offset", FULL_SCALE),
        (r"bit_depth", Unit("bits", "bits per sample")),
        (r"channels", COUNT),
        (r"format_\w+|lossy|float_format|identical_channels", INDICATOR),
        (r"channel_correlation|noise_flatness", UNITLESS),  # Pearson r; geometric over arithmetic mean power
    ],
    "spectral": [
        (r"(centroid|bandwidth|rolloff)_hz_(mean|std|p\d+)", HZ),
        (r"(alpha_ratio|hammarberg)_db_(mean|std)", DB),
        (r"slope_\d+_\d+_db_khz_(mean|std)", DB_PER_KHZ),
        (r"contrast_\d+_(mean|std)", DB),  # peak over valley of a sub-band (librosa's spectral contrast)
        (r"ltas_(mel|lin)_\d+", DB),  # band level relative to the clip's mean band level
        (r"flux_(mean|std)", Unit("dB", "dB per frame")),  # mean rise of the log-mel bands between 10 ms frames
        (r"mod_[\d.]+_[\d.]+hz", PERCENT),  # share of the envelope's modulation power in that band
        (r"zcr_(mean|std)", Unit("", "crossings per sample")),
        (r"flatness_(mean|std|p\d+)", UNITLESS),  # geometric over arithmetic mean power, 0..1
        (r"mfcc_\d+(_delta)?_(mean|std)", UNITLESS),  # cepstral coefficients of the dB mel spectrum
    ],
    "prosodic": [
        (r"f0_(mean|median|std|p\d+)_hz", HZ),
        (r"f0_(std|range|iqr)_st", SEMITONES),
        (r"f0_velocity_st_s", SEMITONES_PER_S),
        (r"hnr_db|hnr_std_db|intensity_(range|std)_db|h\d_h\d_db_(mean|std)|cpp_db_(mean|std)", DB),
        (r"jitter_(local|rap)|shimmer_(local|apq\d+)", PERCENT),  # of the mean period / amplitude (Praat's %)
        (r"voiced_fraction|pause_ratio", PERCENT),
        (r"speaking_rate|articulation_rate", SYLLABLES_PER_S),
        (r"voiced_segment_rate", PER_SECOND),
        (r"voiced_segment_mean_s", SECONDS),
        (r"syllable_count|pause_count", COUNT),
    ],
    "music": [
        (r"tempo_bpm", BPM),
        (r"onset_rate_hz", Unit("Hz", "onsets per second")),
        (r"hp_ratio_db", DB),
        (r"lra_lu", LU),
        (r"chroma_entropy|chroma_profile_entropy", BITS),
        (r"flux_(mean|std|p\d+)", Unit("dB", "dB per frame")),  # librosa's onset strength of the dB mel bands
        (r"key_major", INDICATOR),
        (r"beat_strength", RATIO),  # onset strength at the beats over elsewhere
        (r"chroma_mean_\d+|chroma_std|chroma_novelty_(mean|std)|tonnetz_\d+_(mean|std)|key_clarity|key_margin|"
         r"beat_interval_cv", UNITLESS),
    ],
    "content": [
        (r"(speech|music|other|silence)_share", PERCENT),
        (r"speech_s", SECONDS),
    ],
    "text": [  # also the text sources' features, text.<source>.<name>
        (r"n_chars", Unit("", "characters")),
        (r"n_words", Unit("", "words")),
        (r"mean_word_len", CHARACTERS),
        (r"type_token_ratio|digit_share|punct_share|oov_share", PERCENT),
        (r"compression_ratio", RATIO),  # zlib: original over compressed length, not a share
        (r"empty", INDICATOR),
        (r"emb_\d+", UNITLESS),
    ],
    "voice": [(r"emb_\d+", UNITLESS)],
}
_COMPILED = {mod: [(re.compile(p), u) for p, u in rows] for mod, rows in _TABLE.items()}

# Naming conventions, in order (the first suffix that matches decides), for names the table does not hold.
_CONVENTIONS: list[tuple[str, Unit]] = [
    ("_st_s", SEMITONES_PER_S), ("_db_khz", DB_PER_KHZ), ("_hz", HZ), ("_dbfs", DBFS), ("_lufs", LUFS),
    ("_lu", LU), ("_db", DB), ("_s", SECONDS), ("_st", SEMITONES), ("_bpm", BPM),
    ("_ratio", PERCENT), ("_fraction", PERCENT), ("_share", PERCENT), ("_count", COUNT),
]
_STATISTIC = re.compile(r"_(mean|median|std|iqr|min|max|p\d+)$")


def _split(feature: str) -> tuple[str, str]:
    """(modality, name): ``recording.dc_offset`` -> (recording, dc_offset); ``text.caption.n_words`` -> (text,
    n_words); a name without a prefix -> ("", name)."""
    parts = feature.split(".")
    return (parts[0], parts[-1]) if len(parts) > 1 else ("", feature)


def unit_of(feature: str) -> Unit:
    """The unit of a feature's stored value: from the table of the extractors' definitions, else from the naming
    conventions (the suffix of the name, or of the name without a trailing statistic such as ``_mean``), else
    unitless (``explicit`` False for the last two)."""
    modality, name = _split(feature)
    for pattern, unit in _COMPILED.get(modality, ()):
        if pattern.fullmatch(name):
            return unit
    if name == "sample_rate":
        return Unit(HZ.symbol, HZ.axis, explicit=False)
    for base in dict.fromkeys((name, _STATISTIC.sub("", name))):
        for suffix, unit in _CONVENTIONS:
            if base.endswith(suffix):
                return Unit(unit.symbol, unit.axis, unit.scale, explicit=False)
    return Unit("", "", explicit=False)


def axis_label(feature: str, prefix: str = "") -> str:
    """``feature (unit)`` for an axis, with ``prefix`` before the unit (``"x10^-5 "``); the feature name alone for
    a unitless quantity without a prefix."""
    inside = f"{prefix}{unit_of(feature).axis}".strip()
    return f"{feature} ({inside})" if inside else feature
