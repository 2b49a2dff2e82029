"""Decoding: the one place in blindcheck that reads audio files.

:func:`decode` returns the samples (float32, mono, at the file's own sample rate) together with what the
file itself says: native sample rate, channels, container format, subtype/codec, bit depth, duration.
:func:`load_clip` adds one resampling to the analysis rate, which every extractor receives.

WAV/FLAC/OGG/MP3 (and everything else libsndfile reads) go through ``soundfile``; other compressed formats
(AAC/M4A, Opus, WebM, WMA, ...) go through FFmpeg via PyAV. Both decode from bytes already in memory, so
the file is read exactly once (the same bytes are hashed for the cache).

While the decoders hold every channel they also sum what the ``recording.*`` channel features need
(:func:`channel_sums`: a few numbers per file, so no N-channel copy outlives decoding). :func:`decode_windows`
applies a :class:`WindowPolicy`: a long file is read only at its analysis windows (both decoders seek), so that
decoding memory does not grow with the file's length.
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
    channel_sums: dict[str, Any] = field(default_factory=dict)  # see channel_sums(), over these samples' frames
    span_s: float | None = None  # set on a window: the length of the whole file (or manifest segment) it is from
    window: tuple[float, float] | None = None  # set on a window: its (start, end) seconds within that file/segment

    @property
    def duration_s(self) -> float:
        """Seconds of the samples held (of the window, for one window of a long file: see ``span_s``)."""
        return len(self.samples) / self.sr if self.sr else 0.0


@dataclass(frozen=True)
class WindowPolicy:
    """Which parts of a long file are analysed.

    A file (or manifest segment) longer than ``long_s`` seconds is analysed on ``count`` windows of ``window_s``
    seconds, evenly spaced from its start to its end: the first window starts at the first sample, the last ends
    at the last one (so the file's edges are read: its leading and trailing silence, a fade, a truncated tail),
    the others at equal steps between, each window's first frame rounded to the nearest sample. ``long_s`` must
    be at least ``count * window_s``, so the windows never overlap. ``long_s=None``: every file is analysed whole.
    Deterministic: the windows depend only on the file's length, its rate and the policy.
    """

    long_s: float | None = 30.0
    count: int = 3
    window_s: float = 5.0

    def __post_init__(self):
        if self.long_s is None:
            return
        if self.count < 2:
            raise ValueError(f"a window policy needs at least 2 windows (the file's start and end), not {self.count}")
        if not self.window_s > 0:
            raise ValueError(f"window length must be positive, not {self.window_s}")
        if self.long_s < self.count * self.window_s:
            raise ValueError(f"the long-file threshold ({self.long_s:g} s) must be at least the windows' total "
                             f"({self.count} x {self.window_s:g} s), or the windows would overlap")

    def key(self) -> dict:
        """What decides the analysed samples (part of the cache key)."""
        if self.long_s is None:
            return {"windows": "whole files"}
        return {"long_s": float(self.long_s), "count": int(self.count), "window_s": float(self.window_s)}

    def windows(self, frames: int, sr: int) -> list[tuple[int, int]] | None:
        """The windows of a span of ``frames`` frames at ``sr``, as (first, end) frame offsets into it; None when the
        span is analysed whole."""
        if self.long_s is None or frames <= self.long_s * sr:
            return None
        w = int(round(self.window_s * sr))
        firsts = [int(round(k * (frames - w) / (self.count - 1))) for k in range(self.count)]
        return [(a, a + w) for a in firsts]

    def describe(self, windows: list[tuple[int, int]], frames: int, sr: int) -> str:
        at = ", ".join(f"{a / sr:.1f}" for a, _ in windows)
        return (f"windowed: {len(windows)} windows of {self.window_s:g} s starting at {at} s of {frames / sr:.1f} s "
                f"(files over {self.long_s:g} s are analysed on windows)")


WHOLE_FILES = WindowPolicy(long_s=None)
_SUM_BLOCK = 1 << 16  # frames per block in channel_sums (float64 copies of a block, not of the file)


def channel_sums(x: np.ndarray) -> dict[str, Any]:
    """What the channel features need of ``x`` (frames x channels, float32), summed in float64 block by block:
    ``frames``, ``channels``, per-channel ``sums`` and the Gram matrix ``gram`` (sum of x_i * x_j), ``side`` and
    ``mid`` (sums of (x0 - x1)**2 and (x0 + x1)**2, the first two channels; 0 for mono) and ``identical`` (every
    channel equal to the first at every sample)."""
    n, c = x.shape
    gram, sums = np.zeros((c, c)), np.zeros(c)
    side = mid = 0.0
    identical = True
    for i in range(0, n, _SUM_BLOCK):
        b = x[i:i + _SUM_BLOCK].astype(np.float64)
        gram += b.T @ b
        sums += b.sum(axis=0)
        if c >= 2:
            d, m = b[:, 0] - b[:, 1], b[:, 0] + b[:, 1]
            side += float(d @ d)
            mid += float(m @ m)
            identical = identical and bool((b[:, 1:] == b[:, :1]).all())
    return {"frames": int(n), "channels": int(c), "sums": sums.tolist(), "gram": gram.tolist(), "side": side,
            "mid": mid, "identical": identical}


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
    return decode_windows(data, start, end, allow_truncated, WHOLE_FILES)[0]


def decode_windows(data: bytes, start: float | None = None, end: float | None = None,
                   allow_truncated: bool = False, policy: WindowPolicy = WHOLE_FILES) -> list[DecodedAudio]:
    """:func:`decode` under a window policy: one :class:`DecodedAudio` when the file (or segment) is analysed whole,
    else one per window of ``policy`` (each with ``span_s`` and ``window`` set, and a note starting ``windowed``
    on the first), read by seeking (FFmpeg: from a keyframe half a second before each window, so that the codec
    has warmed up). Only a window that holds no samples at all (the tail of a truncated file analysed anyway) is
    left out; the errors are :func:`decode`'s."""
    if len(data) == 0:
        raise AudioError("empty file (0 bytes)")
    try:
        pieces = _decode_soundfile(data, start, end, policy)
    except AudioError:
        raise
    except Exception as sf_exc:  # libsndfile does not know the format: try FFmpeg
        try:
            pieces = _decode_ffmpeg(data, start, end, policy)
        except AudioError:
            raise
        except Exception as av_exc:
            raise AudioError(
                f"not a readable audio file (libsndfile: {_short(sf_exc)}; ffmpeg: {_short(av_exc)})"
            ) from av_exc
    first = pieces[0]
    if first.truncated is not None:
        declared, held = first.truncated
        what = f"truncated: the header declares {_seconds(declared)}, the file holds {_seconds(held)}"
        if not allow_truncated:
            raise AudioError(what)
        first.notes.append(what + TRUNCATED_ALLOWED)
    kept = [a for a in pieces if a.samples.size]
    if not kept:
        raise AudioError("the file decodes to zero samples")
    if len(kept) < len(pieces):
        kept[0].notes = first.notes + [f"{len(pieces) - len(kept)} of {len(pieces)} windows hold no samples "
                                       "(past the end of the file): left out"]
    for audio in kept:
        if not np.all(np.isfinite(audio.samples)):
            bad = int((~np.isfinite(audio.samples)).sum())
            audio.samples = np.nan_to_num(audio.samples, nan=0.0, posinf=1.0, neginf=-1.0)
            audio.notes.append(f"{bad} non-finite samples replaced by 0/±1")
    return kept


def _windowed(first: int, last: int, sr: int, policy: WindowPolicy) -> tuple[list[tuple[int, int]], str | None]:
    """The reads of a span [first, last) of frames under ``policy``: absolute (first, end) frames, and the note
    (None when the span is read whole)."""
    wins = policy.windows(last - first, sr)
    if wins is None:
        return [(first, last)], None
    return [(first + a, first + b) for a, b in wins], policy.describe(wins, last - first, sr)


def _with_windows(pieces: list[DecodedAudio], reads: list[tuple[int, int]], first: int, last: int,
                  note: str | None) -> list[DecodedAudio]:
    """Mark the pieces of a windowed read with their place in the span (and the note on the first)."""
    if note is None:
        return pieces
    sr = pieces[0].sr
    for a, (lo, hi) in zip(pieces, reads, strict=True):
        a.span_s, a.window = (last - first) / sr, ((lo - first) / sr, (hi - first) / sr)
    pieces[0].notes.append(note)
    return pieces


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


def _decode_soundfile(data: bytes, start: float | None, end: float | None,
                      policy: WindowPolicy = WHOLE_FILES) -> list[DecodedAudio]:
    import soundfile as sf

    reads, got = [], []
    with sf.SoundFile(io.BytesIO(data)) as f:
        sr, channels, fmt, subtype = f.samplerate, f.channels, f.format, f.subtype
        declared = f.frames
        first = 0 if start is None or math.isnan(start) else max(0, int(round(start * sr)))
        last = declared if end is None or math.isnan(end) else min(declared, int(round(end * sr)))
        reads, note = _windowed(first, max(first, last), sr, policy)
        for lo, hi in reads:
            failure = None
            try:  # one read per window: libsndfile's MP3 decoder goes wrong over several reads
                if lo:
                    f.seek(min(lo, declared))
                x = f.read(frames=max(0, hi - lo), dtype="float32", always_2d=True)
            except Exception as exc:
                failure = exc
            if failure is not None:  # a truncated FLAC fails ("lost sync") when its data ends: keep what decodes
                x = _read_until_failure(data, lo, max(0, hi - lo), channels)
                if not len(x) and not any(len(g) for g in got):
                    raise AudioError(f"truncated or corrupt: the header declares {_seconds(declared / sr)}, "
                                     f"nothing decodes ({_short(failure)})")
            # what this window holds, reduced to the mono mix and the channel sums (the channels go)
            got.append((np.ascontiguousarray(x.mean(axis=1), dtype=np.float32), channel_sums(x),
                        max(0, hi - lo) - len(x), lo + len(x)))
            del x
    lossy = subtype in _LOSSY_SUBTYPES
    truncated = None
    riff = _riff_declared(data)
    short = [held for _, _, want, held in got if want > 0]
    if riff is not None:  # libsndfile quietly shortens a truncated WAV's frame count: read the header itself
        truncated = _shortfall(riff / sr, declared / sr, lossy=False)
    elif short:
        truncated = _shortfall(declared / sr, short[0] / sr, lossy)
    pieces = [DecodedAudio(
        samples=mono,
        sr=int(sr),
        channels=int(channels),
        format=str(fmt),
        subtype=str(subtype),
        bit_depth=float(_SUBTYPE_BITS.get(subtype, math.nan)),
        lossy=lossy,
        decoder="soundfile",
        truncated=truncated,
        channel_sums=sums,
    ) for mono, sums, _, _ in got]
    return _with_windows(pieces, reads, first, max(first, last), note)


def _read_until_failure(data: bytes, first: int, frames: int, channels: int) -> np.ndarray:
    import soundfile as sf

    blocks = []
    with sf.SoundFile(io.BytesIO(data)) as f:
        try:
            if first:
                f.seek(first)
        except Exception:  # past what decodes
            frames = 0
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


_PREROLL_S = 0.5  # FFmpeg windows: decoding starts this much before a window (Opus needs 80 ms to converge)


def _decode_ffmpeg(data: bytes, start: float | None, end: float | None,
                   policy: WindowPolicy = WHOLE_FILES) -> list[DecodedAudio]:
    import av

    with av.open(io.BytesIO(data), mode="r") as container:
        if not container.streams.audio:
            raise AudioError("the file has no audio stream")
        stream = container.streams.audio[0]
        codec = stream.codec_context
        sr = int(codec.sample_rate or stream.rate or 0)
        channels = int(codec.channels or 1)
        fmt = container.format.name.split(",")[0].upper()
        codec_name = codec.name
        bits = codec.format.bits if codec.format is not None else 0
        declared = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else \
            (container.duration / 1e6 if container.duration else math.nan)
        lossless = codec_name in _LOSSLESS_CODECS or codec_name.startswith("pcm_")
        first = 0 if start is None or math.isnan(start) else max(0, int(round(start * sr)))
        last = None
        if math.isfinite(declared) and sr > 0:
            last = int(round(declared * sr))
            if end is not None and not math.isnan(end):
                last = min(last, int(round(end * sr)))
        # Windows need the length before decoding: a stream that declares none is decoded whole.
        reads, note = _windowed(first, max(first, last), sr, policy) if last is not None else (None, None)
        if note is None:
            got = [_ffmpeg_whole(container, stream, sr, start, end)]
            held, reads = got[0][2], None
        else:
            got = [_ffmpeg_window(container, stream, sr, lo, hi, k > 0) for k, (lo, hi) in enumerate(reads)]
            held = got[-1][2]
    if sr <= 0 or (note is None and got[0][0].size == 0):
        raise AudioError("the file decodes to zero samples")
    truncated = None
    if math.isfinite(declared) and (reads is None or held < reads[-1][1]):  # a window that ends short: the data did
        truncated = _shortfall(declared, held / sr, lossy=not lossless)
    pieces = [DecodedAudio(
        samples=mono,
        sr=sr,
        channels=channels,
        format=fmt,
        subtype=codec_name,
        bit_depth=float(bits) if lossless and bits else math.nan,
        lossy=not lossless,
        decoder="ffmpeg",
        truncated=truncated,
        channel_sums=sums,
    ) for mono, sums, _ in got]
    return pieces if note is None else _with_windows(pieces, reads, first, max(first, last), note)


_INT_SCALE = {"u8": 128.0, "s16": 32768.0, "s32": 2147483648.0, "s64": 9223372036854775808.0}


def _planar(frame) -> np.ndarray:
    """channels x samples float32 of one FFmpeg frame, converted here frame by frame (the same values as PyAV's
    AudioResampler to float planar gave, checked on Opus, AAC, MP3, FLAC and 16-bit PCM): each frame's samples stay
    with its own timestamp, which places a window read after a seek, with no converter buffering in between."""
    name = frame.format.name
    x = frame.to_ndarray()
    if not frame.format.is_planar:  # packed: (1, samples * channels), interleaved
        x = x.reshape(-1, len(frame.layout.channels)).T
    base = name.rstrip("p")
    if base in _INT_SCALE:
        x = (x.astype(np.float64) - (128.0 if base == "u8" else 0.0)) / _INT_SCALE[base]
    return x.astype(np.float32, copy=False)


def _ffmpeg_whole(container, stream, sr: int, start, end) -> tuple[np.ndarray, dict, int]:
    """Every sample of the stream, then the segment: (mono, channel sums of the segment, frames decoded)."""
    chunks = [_planar(frame) for frame in container.decode(stream)]
    if not chunks:
        return np.zeros(0, np.float32), channel_sums(np.zeros((0, 1), np.float32)), 0
    x = np.concatenate(chunks, axis=1)
    del chunks
    held = x.shape[1]
    if start is not None and not math.isnan(start):
        x = x[:, int(round(start * sr)):]
    if end is not None and not math.isnan(end):
        x = x[:, : max(0, int(round((end - (start or 0.0)) * sr)))]
    return np.ascontiguousarray(x.mean(axis=0)), channel_sums(x.T), held


def _ffmpeg_window(container, stream, sr: int, lo: int, hi: int, seek: bool) -> tuple[np.ndarray, dict, int]:
    """Frames [lo, hi) of the stream (counted from its first decoded sample, as :func:`_ffmpeg_whole` counts):
    seek to a keyframe at least :data:`_PREROLL_S` before ``lo``, place the first frame decoded by its timestamp,
    count on from there, stop at ``hi``. Returns (mono, channel sums, the frame the decoding reached)."""
    # The position of a frame: its timestamp from the stream's start, so exact to the sample in Ogg and MP4 (time
    # base 1/rate) and to the time base elsewhere (WebM and Matroska: 1 ms). libsndfile's whole read of an Ogg Opus
    # file keeps the pre-skip (312 samples) at its start while its seek does not: its windows sit 6.5 ms later
    # than the same stretch of its whole read, where the FFmpeg decoder's agree exactly.
    origin = stream.start_time or 0
    if seek or lo > _PREROLL_S * sr:
        at = max(0.0, lo / sr - _PREROLL_S)
        container.seek(origin + int(at / stream.time_base), stream=stream, backward=True)
    pos, chunks = None, []
    for frame in container.decode(stream):
        if pos is None:
            if frame.pts is None:
                raise AudioError("FFmpeg gives this stream's frames no timestamps: it cannot be read in windows")
            pos = int(round((frame.pts - origin) * stream.time_base * sr))
        n = frame.samples
        if pos + n > lo:
            chunks.append(_planar(frame)[:, max(0, lo - pos): max(0, hi - pos)])
        pos += n
        if pos >= hi:
            break
    x = np.concatenate(chunks, axis=1).astype(np.float32, copy=False) if chunks else np.zeros((1, 0), np.float32)
    return np.ascontiguousarray(x.mean(axis=0)), channel_sums(x.T), pos if pos is not None else lo


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """High-quality band-limited resampling (soxr); returns float32."""
    if sr_in == sr_out:
        return x.astype(np.float32, copy=False)
    import soxr

    return soxr.resample(x, sr_in, sr_out, quality="HQ").astype(np.float32, copy=False)


def load_clip(clip_id: str, audio: DecodedAudio, sr: int = ANALYSIS_SR) -> Clip:
    """Wrap decoded audio for the extractors, resampling once to the analysis rate."""
    return Clip(id=clip_id, audio=audio, y=resample(audio.samples, audio.sr, sr), sr=sr, notes=list(audio.notes))
