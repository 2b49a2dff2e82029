"""Decoding: the one place in blindcheck that reads audio files.

:func:`decode` returns the samples (float32, mono, at the file's own sample rate) together with what the
file itself says: native sample rate, channels, container format, subtype/codec, bit depth, duration.
:func:`load_clip` adds one resampling to the analysis rate, which every extractor receives.

WAV/FLAC/OGG/MP3 (and everything else libsndfile reads) go through ``soundfile``; other compressed formats
(AAC/M4A, Opus, WebM, WMA, ...) go through FFmpeg via PyAV. Both decode from bytes already in memory, so
the file is read exactly once (the same bytes are hashed for the cache).
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from blindcheck.errors import AudioError

ANALYSIS_SR = 16_000
TRUNCATED_ALLOWED = " (analysed as it is: allow-truncated)"  # ends the note of a truncated file analysed anyway

# libsndfile subtypes -> bit depth of the stored samples (lossy codecs have none).
_SUBTYPE_BITS = {
    "PCM_S8": 8, "PCM_U8": 8, "PCM_16": 16, "PCM_24": 24, "PCM_32": 32, "FLOAT": 32, "DOUBLE": 64,
    "ULAW": 8, "ALAW": 8, "DWVW_12": 12, "DWVW_16": 16, "DWVW_24": 24,
}
_LOSSY_SUBTYPES = {"VORBIS", "OPUS", "MPEG_LAYER_I", "MPEG_LAYER_II", "MPEG_LAYER_III", "IMA_ADPCM",
                   "MS_ADPCM", "GSM610", "VOX_ADPCM", "G721_32", "G723_24", "G723_40", "ULAW", "ALAW"}
_LOSSLESS_CODECS = {"flac", "alac", "wavpack", "tta", "ape", "mlp", "truehd"}


@dataclass
class DecodedAudio:
    """Samples of one file (or one segment of it) at its native rate, plus what the file says."""

    samples: np.ndarray  # float32, shape (n,), mono mix in [-1, 1]
    sr: int  # native sample rate
    channels: int
    format: str  # container: WAV, FLAC, OGG, MP3, or FFmpeg's name (mp4, webm, ...)
    subtype: str  # PCM_16, PCM_24, FLOAT, VORBIS, MPEG_LAYER_III, or FFmpeg codec name (aac, opus, ...)
    bit_depth: float  # bits per stored sample; NaN for lossy codecs
    lossy: bool
    decoder: str  # "soundfile" or "ffmpeg"
    notes: list[str] = field(default_factory=list)
    truncated: tuple[float, float] | None = None  # (declared, held) seconds when the file holds less than declared

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sr if self.sr else 0.0


@dataclass
class Clip:
    """What every extractor receives: decoded audio plus its analysis-rate version and shared work."""

    id: str
    audio: DecodedAudio
    y: np.ndarray  # float32 mono at ``sr``
    sr: int = ANALYSIS_SR
    notes: list[str] = field(default_factory=list)
    shared: dict[str, Any] = field(default_factory=dict)  # computations reused across extractors


def content_hash(data: bytes, start: float | None = None, end: float | None = None,
                 base: hashlib.blake2b | None = None) -> str:
    """Stable key of the audio content (and the segment, when the clip is part of a file). ``base``: a hasher
    that has already consumed ``data`` (see :func:`open_source`), so the segments of one recording hash the
    recording once."""
    h = base.copy() if base is not None else hashlib.blake2b(data, digest_size=16)
    if start is not None and not math.isnan(start):
        h.update(f"|{start:.6f}".encode())
    if end is not None and not math.isnan(end):
        h.update(f"|{end:.6f}".encode())
    return h.hexdigest()


# A clip's audio lives in a file of its own, or inside a Parquet shard of the Hugging Face Hub whose audio column
# holds each encoded file as a struct {bytes, path}; such a clip's path is a reference "<shard>#<column>=<row>".
_SHARD_REF = re.compile(r"^(?P<shard>.+\.parquet)#(?P<column>[^#=/]+)=(?P<row>\d+)$")


def shard_ref(shard: str, column: str, row: int) -> str:
    """The path of the clip held in row ``row`` of ``column`` of the Parquet shard ``shard``."""
    return f"{shard}#{column}={row}"


def split_ref(path: str) -> tuple[str, str, int] | None:
    """(shard, column, row) when ``path`` is a shard reference (and not itself an existing file), else None."""
    m = _SHARD_REF.match(str(path))
    if m is None or os.path.isfile(path):
        return None
    return m["shard"], m["column"], int(m["row"])


def source_file(path: str) -> str:
    """The file on disk that holds a clip's bytes: the clip's own file, or its shard."""
    ref = split_ref(path)
    return ref[0] if ref else path


@dataclass
class Source:
    """One source's bytes, and a hasher that has consumed them."""

    data: bytes
    hasher: Any

    def key(self, start: float | None = None, end: float | None = None) -> str:
        return content_hash(self.data, start, end, base=self.hasher)


_LAST_SOURCE: dict[tuple, Source] = {}
_LAST_GROUP: dict[tuple, list] = {}


def open_source(path: str) -> Source:
    """Read a clip's source once: the last one read is remembered (by path, size and modification time), so the
    segments of one recording, handled one after another, read and hash it once."""
    try:
        st = os.stat(source_file(path))
    except OSError as exc:
        raise AudioError(f"cannot read file: {exc.strerror or exc}") from exc
    key = (str(path), st.st_size, st.st_mtime_ns)
    source = _LAST_SOURCE.get(key)  # one lookup: another thread (a Dask worker with several) may replace the entry
    if source is None:
        data = _read_source(path, st)
        source = Source(data, hashlib.blake2b(data, digest_size=16))
        _LAST_SOURCE.clear()
        _LAST_SOURCE[key] = source
    return source


def _read_source(path: str, st: os.stat_result) -> bytes:
    ref = split_ref(path)
    if ref is None:
        try:
            with open(path, "rb") as fh:
                return fh.read()
        except OSError as exc:
            raise AudioError(f"cannot read file: {exc.strerror or exc}") from exc
    shard, column, row = ref
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(shard).metadata
        first, group = 0, None
        for g in range(meta.num_row_groups):
            n = meta.row_group(g).num_rows
            if row < first + n:
                group = g
                break
            first += n
        if group is None:
            raise AudioError(f"shard {shard} has {first} rows, no row {row}")
        gkey = (shard, st.st_size, st.st_mtime_ns, column, group)
        if gkey not in _LAST_GROUP:  # one row group in memory: the next clips of the shard come from it
            values = pq.ParquetFile(shard).read_row_group(group, columns=[column]).column(0).to_pylist()
            _LAST_GROUP.clear()
            _LAST_GROUP[gkey] = values
        item = _LAST_GROUP[gkey][row - first]
    except AudioError:
        raise
    except Exception as exc:
        raise AudioError(f"cannot read row {row} of column '{column}' of shard {shard}: {_short(exc)}") from exc
    data = item.get("bytes") if isinstance(item, dict) else item
    if not data:
        inner = item.get("path") if isinstance(item, dict) else None
        raise AudioError(f"row {row} of shard {shard} holds no audio bytes" + (f" (only a path '{inner}')"
                                                                               if inner else ""))
    return bytes(data)


def read_bytes(path: str) -> bytes:
    """The encoded bytes of a clip's source: its file, or its entry in a Parquet shard."""
    return open_source(path).data


def decode(data: bytes, start: float | None = None, end: float | None = None,
           allow_truncated: bool = False) -> DecodedAudio:
    """Decode audio bytes to mono float32 at the native rate.

    ``start``/``end`` (seconds) select a segment. Raises :class:`AudioError` with a specific message for an
    empty file, bytes that are no audio, a file with no samples, or a *truncated* file: one that holds less
    audio than its container declares (the WAV data chunk's size, FLAC's STREAMINFO total, an MP3's Xing frame
    count, FFmpeg's stream duration), as a partial download or copy does. With ``allow_truncated`` such a file
    is analysed as it is, with a note that starts with ``truncated``.
    """
    if len(data) == 0:
        raise AudioError("empty file (0 bytes)")
    try:
        audio = _decode_soundfile(data, start, end)
    except AudioError:
        raise
    except Exception as sf_exc:  # libsndfile does not know the format: try FFmpeg
        try:
            audio = _decode_ffmpeg(data, start, end)
        except AudioError:
            raise
        except Exception as av_exc:
            raise AudioError(
                f"not a readable audio file (libsndfile: {_short(sf_exc)}; ffmpeg: {_short(av_exc)})"
            ) from av_exc
    if audio.truncated is not None:
        declared, held = audio.truncated
        what = f"truncated: the header declares {_seconds(declared)}, the file holds {_seconds(held)}"
        if not allow_truncated:
            raise AudioError(what)
        audio.notes.append(what + TRUNCATED_ALLOWED)
    if audio.samples.size == 0:
        raise AudioError("the file decodes to zero samples")
    if not np.all(np.isfinite(audio.samples)):
        bad = int((~np.isfinite(audio.samples)).sum())
        audio.samples = np.nan_to_num(audio.samples, nan=0.0, posinf=1.0, neginf=-1.0)
        audio.notes.append(f"{bad} non-finite samples replaced by 0/±1")
    return audio


def _seconds(s: float) -> str:
    return f"{s:.1f} s" if s >= 1 else f"{1000 * s:.0f} ms"


def _shortfall(declared: float, held: float, lossy: bool) -> tuple[float, float] | None:
    """(declared, held) seconds when the file holds clearly less than it declares, else None. Lossy decoders
    trim encoder delay and padding (tens of ms), so they get a wider margin."""
    margin = max(0.1, 0.02 * declared) if lossy else 0.002
    return (declared, held) if declared - held > margin else None


_BUFFER_REPR = re.compile(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>:?\s*")


def _short(exc: Exception) -> str:
    """The first line of a decoder's message, without the in-memory buffer's repr that libsndfile puts in it
    (``Error opening <_io.BytesIO object at 0x...>: Format not recognised``): the path is named beside it."""
    msg = [_BUFFER_REPR.sub("", line).replace("Error opening ", "").strip() for line in str(exc).strip().splitlines()]
    msg = [m for m in msg if m]
    return (msg[0] if msg else type(exc).__name__)[:160]


def _decode_soundfile(data: bytes, start: float | None, end: float | None) -> DecodedAudio:
    import soundfile as sf

    with sf.SoundFile(io.BytesIO(data)) as f:
        sr, channels, fmt, subtype = f.samplerate, f.channels, f.format, f.subtype
        declared = f.frames
        first = 0 if start is None or math.isnan(start) else max(0, int(round(start * sr)))
        last = declared if end is None or math.isnan(end) else min(declared, int(round(end * sr)))
        if first:
            f.seek(min(first, declared))
        failure = None
        try:  # one read: libsndfile's MP3 decoder goes wrong over several reads
            x = f.read(frames=max(0, last - first), dtype="float32", always_2d=True)
        except Exception as exc:
            failure = exc
    if failure is not None:  # a truncated FLAC fails ("lost sync") when its data ends: keep what decodes
        x = _read_until_failure(data, first, max(0, last - first), channels)
        if not len(x):
            raise AudioError(f"truncated or corrupt: the header declares {_seconds(declared / sr)}, nothing "
                             f"decodes ({_short(failure)})")
    want = max(0, last - first) - len(x)
    lossy = subtype in _LOSSY_SUBTYPES
    truncated = None
    riff = _riff_declared(data)
    if riff is not None:  # libsndfile quietly shortens a truncated WAV's frame count: read the header itself
        truncated = _shortfall(riff / sr, declared / sr, lossy=False)
    elif want > 0:
        truncated = _shortfall(declared / sr, (first + len(x)) / sr, lossy)
    return DecodedAudio(
        samples=np.ascontiguousarray(x.mean(axis=1), dtype=np.float32),
        sr=int(sr),
        channels=int(channels),
        format=str(fmt),
        subtype=str(subtype),
        bit_depth=float(_SUBTYPE_BITS.get(subtype, math.nan)),
        lossy=lossy,
        decoder="soundfile",
        truncated=truncated,
    )


def _read_until_failure(data: bytes, first: int, frames: int, channels: int) -> np.ndarray:
    import soundfile as sf

    blocks = []
    with sf.SoundFile(io.BytesIO(data)) as f:
        if first:
            f.seek(first)
        while frames > 0:
            try:
                b = f.read(frames=min(frames, 4096), dtype="float32", always_2d=True)
            except Exception:
                break
            if len(b) == 0:
                break
            blocks.append(b)
            frames -= len(b)
    return np.concatenate(blocks) if blocks else np.zeros((0, channels), np.float32)


def _riff_declared(data: bytes) -> int | None:
    """Frames a RIFF/WAVE header declares (data chunk size / block align); None if not WAV or not stated."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    pos, align = 12, 0
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        if cid == b"fmt " and pos + 22 <= len(data):
            align = int.from_bytes(data[pos + 20:pos + 22], "little")
        if cid == b"data":
            return size // align if align and size not in (0, 0xFFFFFFFF) else None
        pos += 8 + size + (size & 1)
    return None


def _decode_ffmpeg(data: bytes, start: float | None, end: float | None) -> DecodedAudio:
    import av

    with av.open(io.BytesIO(data), mode="r") as container:
        if not container.streams.audio:
            raise AudioError("the file has no audio stream")
        stream = container.streams.audio[0]
        codec = stream.codec_context
        sr = int(codec.sample_rate or stream.rate or 0)
        channels = int(codec.channels or 1)
        resampler = av.AudioResampler(format="fltp", layout=codec.layout.name if codec.layout else None, rate=sr)
        chunks = []
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray())
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray())
        fmt = container.format.name.split(",")[0].upper()
        codec_name = codec.name
        bits = codec.format.bits if codec.format is not None else 0
        declared = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else \
            (container.duration / 1e6 if container.duration else math.nan)
    if not chunks or sr <= 0:
        raise AudioError("the file decodes to zero samples")
    x = np.concatenate(chunks, axis=1).astype(np.float32)
    mono = x.mean(axis=0)
    lossless = codec_name in _LOSSLESS_CODECS or codec_name.startswith("pcm_")
    truncated = _shortfall(declared, len(mono) / sr, lossy=not lossless) if math.isfinite(declared) else None
    if start is not None and not math.isnan(start):
        mono = mono[int(round(start * sr)):]
    if end is not None and not math.isnan(end):
        mono = mono[: max(0, int(round((end - (start or 0.0)) * sr)))]
    return DecodedAudio(
        samples=np.ascontiguousarray(mono),
        sr=sr,
        channels=channels,
        format=fmt,
        subtype=codec_name,
        bit_depth=float(bits) if lossless and bits else math.nan,
        lossy=not lossless,
        decoder="ffmpeg",
        truncated=truncated,
    )


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """High-quality band-limited resampling (soxr); returns float32."""
    if sr_in == sr_out:
        return x.astype(np.float32, copy=False)
    import soxr

    return soxr.resample(x, sr_in, sr_out, quality="HQ").astype(np.float32, copy=False)


def load_clip(clip_id: str, audio: DecodedAudio, sr: int = ANALYSIS_SR) -> Clip:
    """Wrap decoded audio for the extractors, resampling once to the analysis rate."""
    return Clip(id=clip_id, audio=audio, y=resample(audio.samples, audio.sr, sr), sr=sr, notes=list(audio.notes))
