"""A model's identity in cache keys: a digest of its files' contents.

Names and sizes are not enough (two fine-tunes of one model have the same files, of the same sizes). Hashing a
model's files costs a fraction of a second per hundred megabytes, so it is done once: the digest is remembered
in a small JSON file in the cache root, by the model's path and each file's size and modification time, and
recomputed only when one of those changes.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from blindcheck.runtime.files import write_text_atomic

MEMO_NAME = "model-digests.json"


def _files(path: Path) -> list[tuple[str, Path]]:
    if path.is_dir():
        return sorted((f.relative_to(path).as_posix(), f) for f in path.rglob("*") if f.is_file())
    return [(path.name, path)]


def model_digest(path: str | os.PathLike, memo_dir: str | os.PathLike | None = None) -> str:
    """Hex digest of the contents (and relative names) of a model's files: a folder's, or the one file's.

    ``memo_dir``: where ``model-digests.json`` remembers digests (the cache root); None: always compute."""
    p = Path(path).resolve()
    files = _files(p)
    stamp = {name: [f.stat().st_size, f.stat().st_mtime_ns] for name, f in files}
    memo_path = Path(memo_dir) / MEMO_NAME if memo_dir is not None else None
    memo: dict = {}
    if memo_path is not None and memo_path.exists():
        try:
            memo = json.loads(memo_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            memo = {}  # a damaged memo is only a lost shortcut
        entry = memo.get(str(p))
        if isinstance(entry, dict) and entry.get("files") == stamp and isinstance(entry.get("digest"), str):
            return entry["digest"]
    h = hashlib.blake2b(digest_size=16)
    for name, f in files:
        h.update(f"{name}\0".encode())
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 22):
                h.update(chunk)
        h.update(b"\0")
    digest = h.hexdigest()
    if memo_path is not None:
        memo[str(p)] = {"files": stamp, "digest": digest}
        memo_path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(memo_path, json.dumps(memo, indent=1, sort_keys=True))
    return digest
