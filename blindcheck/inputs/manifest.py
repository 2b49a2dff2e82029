"""Load any supported manifest into one canonical :class:`pandas.DataFrame`.

Canonical columns (always present after :func:`load_manifest`):

- ``id`` (str): unique clip id.
- ``path`` (str): absolute path of the audio file.
- ``label`` (int): 1 = member, 0 = non-member.

Optional canonical columns: ``text`` (transcript), ``speaker``, ``start`` / ``end`` (seconds, for Kaldi
``segments``), any ``mia_*`` score columns, and free metadata columns, kept as they are.

Supported inputs: CSV, TSV, JSONL (``.jsonl``/``.ndjson``, gzipped too), Parquet, a Kaldi data directory
(``wav.scp``, optional ``text``, ``utt2spk``, ``segments``, and the labels in ``utt2label``), a Hugging Face
``audiofolder`` directory (``metadata.csv`` / ``metadata.jsonl`` with ``file_name``; the label comes from a
label column or from ``train/`` / ``test/`` split folders), Hugging Face Hub Parquet shards with embedded audio
(a shard, a directory of shards or a glob) and lhotse manifests (see :mod:`blindcheck.inputs.formats`).

Validation happens here, once. Every error names the row and the problem.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from blindcheck.errors import ManifestError, option
from blindcheck.inputs import formats
from blindcheck.inputs.audio import source_file
from blindcheck.inputs.vocabulary import (
    CAPTION_COLUMNS,
    ID_COLUMNS,
    KALDI_LABEL_FILES,
    LABEL_COLUMNS,
    MEMBER_VALUES,
    NONMEMBER_VALUES,
    PATH_COLUMNS,
    SPEAKER_COLUMNS,
    TEXT_COLUMNS,
)


@dataclass
class ManifestOptions:
    """How to read a manifest. Every field is optional; ``None`` means detect automatically."""

    label_column: str | None = None
    member_value: str | None = None
    path_column: str | None = None
    id_column: str | None = None
    skip_missing: bool = False


@dataclass
class Manifest:
    """A validated manifest: the canonical table plus what was set aside while loading it."""

    table: pd.DataFrame
    source: str
    missing: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=["id", "path", "stage", "message"])
    )

    @property
    def n_members(self) -> int:
        return int((self.table["label"] == 1).sum())

    @property
    def n_nonmembers(self) -> int:
        return int((self.table["label"] == 0).sum())


def load_manifest(source: str | os.PathLike, options: ManifestOptions | None = None) -> Manifest:
    """Read, normalise and validate a manifest file or directory.

    Raises :class:`ManifestError` with a message naming the row and the problem.
    """
    options = options or ManifestOptions()
    src = Path(source)
    if not src.exists() and formats.is_glob(str(source)):  # Hugging Face Hub shards by glob
        raw = formats.read_shards(str(source))
        table, missing = normalise_table(raw, Path.cwd(), options, str(source))
        return Manifest(table=table, source=str(source), missing=missing)
    if not src.exists():
        raise ManifestError(f"manifest not found: {src}")
    lhotse = formats.find_lhotse(src) if src.is_dir() or src.name.endswith((".jsonl", ".jsonl.gz")) else None
    if lhotse:
        raw, base = formats.read_lhotse(lhotse), src if src.is_dir() else src.parent
    elif (src.is_dir() and not (src / "wav.scp").exists() and not (src / "metadata.csv").exists()
          and not (src / "metadata.jsonl").exists() and any(map(formats.is_shard, formats.find_shards(src)))) or \
            (src.is_file() and src.suffix.lower() == ".parquet" and formats.is_shard(src)):
        raw, base = formats.read_shards(src), src if src.is_dir() else src.parent
    elif src.is_dir():
        if (src / "wav.scp").exists():
            raw, base = _read_kaldi(src), src
        elif _audiofolder_metadata(src):
            raw, base = _read_audiofolder(src), src
        else:
            raise ManifestError(
                f"{src} is a directory but neither a Kaldi data dir (no wav.scp) nor a Hugging Face "
                "audiofolder (no metadata.csv or metadata.jsonl)"
            )
    else:
        raw, base = read_table(src), src.parent
    table, missing = normalise_table(raw, base, options, str(src))
    return Manifest(table=table, source=str(src), missing=missing)


# ---------------------------------------------------------------------------------------------- readers


def read_table(path: Path) -> pd.DataFrame:
    suffix = "".join(path.suffixes[-2:]).lower() if path.suffix.lower() == ".gz" else path.suffix.lower()
    try:
        if suffix in (".csv", ".csv.gz"):
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
        elif suffix in (".tsv", ".tsv.gz", ".tab"):
            df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
        elif suffix in (".jsonl", ".ndjson", ".jsonl.gz"):
            df = _read_jsonl(path)
        elif suffix in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        else:
            raise ManifestError(
                f"{path}: unknown manifest format '{suffix}' (expected .csv, .tsv, .jsonl, .parquet, "
                "a Kaldi data directory or an audiofolder directory)"
            )
    except ManifestError:
        raise
    except Exception as exc:  # pandas/pyarrow raise many types; the user needs the file and the reason
        raise ManifestError(f"{path}: cannot be read as a {suffix} manifest: {exc}") from exc
    if df.empty:
        raise ManifestError(f"{path}: the manifest has no rows")
    return df


def _read_jsonl(path: Path) -> pd.DataFrame:
    rows = []
    with (gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")) as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ManifestError(f"{path}: line {lineno} is not valid JSON: {exc.msg}") from exc
            if not isinstance(obj, dict):
                raise ManifestError(f"{path}: line {lineno} is not a JSON object")
            rows.append(obj)
    return pd.DataFrame(rows)


def _read_kaldi_map(path: Path, name: str) -> dict[str, str]:
    out: dict[str, str] = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            line = line.strip()
            if not line:
                continue
            key, _, value = line.partition(" ")
            if key in out:
                raise ManifestError(f"{path}: line {lineno}: duplicate id '{key}' in {name}")
            out[key] = value.strip()
    return out


def _read_kaldi(d: Path) -> pd.DataFrame:
    wav = _read_kaldi_map(d / "wav.scp", "wav.scp")
    for rec, value in wav.items():
        if value.endswith("|"):
            raise ManifestError(
                f"{d / 'wav.scp'}: recording '{rec}' is a piped command ('{value}'); blindcheck does not run "
                "shell commands from manifests — write the audio to files first"
            )
    if (d / "segments").exists():
        rows = []
        for utt, value in _read_kaldi_map(d / "segments", "segments").items():
            parts = value.split()
            if len(parts) != 3:
                raise ManifestError(f"{d / 'segments'}: utterance '{utt}': expected '<rec> <start> <end>'")
            rec, start, end = parts
            if rec not in wav:
                raise ManifestError(f"{d / 'segments'}: utterance '{utt}' refers to recording '{rec}' "
                                    "that is not in wav.scp")
            try:
                start_s, end_s = float(start), float(end)
            except ValueError as exc:
                raise ManifestError(f"{d / 'segments'}: utterance '{utt}': start/end are not numbers") from exc
            rows.append({"id": utt, "path": wav[rec], "start": start_s, "end": end_s, "recording": rec})
        df = pd.DataFrame(rows)
    else:
        df = pd.DataFrame({"id": list(wav), "path": list(wav.values())})
    if (d / "text").exists():
        text = _read_kaldi_map(d / "text", "text")
        df["text"] = df["id"].map(text).fillna("")
    if (d / "utt2spk").exists():
        df["speaker"] = df["id"].map(_read_kaldi_map(d / "utt2spk", "utt2spk"))
    for name in KALDI_LABEL_FILES:
        if (d / name).exists():
            labels = _read_kaldi_map(d / name, name)
            unlabelled = [u for u in df["id"] if u not in labels]
            if unlabelled:
                raise ManifestError(f"{d / name}: utterance '{unlabelled[0]}' has no label "
                                    f"({len(unlabelled)} utterances unlabelled)")
            df["label"] = df["id"].map(labels)
            break
    else:
        raise ManifestError(
            f"{d}: Kaldi data directory without labels: add a file 'utt2label' with lines "
            "'<utt-id> member' or '<utt-id> non-member'"
        )
    return df


def _audiofolder_metadata(d: Path) -> list[Path]:
    """An audiofolder's metadata files: at its top, or one per split folder (``train/metadata.csv``, ...)."""
    dirs = [d, *sorted(c for c in d.iterdir() if c.is_dir())]
    return [p / name for name in ("metadata.csv", "metadata.jsonl") for p in dirs if (p / name).is_file()]


def _read_audiofolder(d: Path) -> pd.DataFrame:
    frames = []
    for meta in _audiofolder_metadata(d):
        part = read_table(meta)
        if "file_name" not in part.columns:
            raise ManifestError(f"{meta}: an audiofolder metadata file needs a 'file_name' column")
        rel = meta.parent.relative_to(d)
        part["file_name"] = [str(rel / f) if str(rel) != "." else f for f in part["file_name"]]
        frames.append(part)
    df = pd.concat(frames, ignore_index=True)
    df = df.rename(columns={"file_name": "path"})
    if not any(c in df.columns for c in LABEL_COLUMNS):
        split = [Path(p).parts[0].lower() if len(Path(p).parts) > 1 else "" for p in df["path"]]
        if all(s in MEMBER_VALUES | NONMEMBER_VALUES for s in split):
            df["label"] = split
    return df


# ------------------------------------------------------------------------------------------ normalising


def _row_name(i: int, ids: pd.Series | None) -> str:
    name = f"row {i + 1}"
    if ids is not None:
        name += f" (id '{ids.iloc[i]}')"
    return name


def pick_column(df: pd.DataFrame, wanted: str | None, candidates: tuple[str, ...], what: str,
                source: str) -> str | None:
    if wanted is not None:
        if wanted not in df.columns:
            cols = ", ".join(map(str, df.columns))
            raise ManifestError(f"{source}: no column '{wanted}' for the {what} (columns: {cols})")
        return wanted
    lower = {str(c).lower(): c for c in df.columns}
    for c in candidates:
        if c in lower:
            return lower[c]
    return None


def map_labels(values: pd.Series, member_value: str | None, ids: pd.Series | None, source: str,
               column: str = "the label column") -> pd.Series:
    """Map raw label values to 1 (member) / 0 (non-member). Unknown values raise, naming the row."""
    out = []
    for i, raw in enumerate(values):
        if raw is None or (isinstance(raw, float) and pd.isna(raw)):
            raise ManifestError(f"{source}: {_row_name(i, ids)}: the label is empty")
        v = str(raw).strip().lower()
        if isinstance(raw, bool):
            v = "true" if raw else "false"
        if member_value is not None:
            out.append(1 if v == str(member_value).strip().lower() else 0)
        elif v in MEMBER_VALUES:
            out.append(1)
        elif v in NONMEMBER_VALUES:
            out.append(0)
        else:
            raise ManifestError(
                f"{source}: {_row_name(i, ids)}: unknown label value '{raw}' (members: member/train/in/1/true; "
                f"non-members: non-member/test/out/0/false; or pass {option('member_value')})"
                + _value_hint(values, column)
            )
    return pd.Series(out, index=values.index, dtype="int64")


def _value_hint(values: pd.Series, column: str = "the label column") -> str:
    """The values a label column holds, and how to turn them into two sides."""
    counts = values.astype(str).str.strip().value_counts()
    shown = ", ".join(f"'{v}' ({n})" for v, n in counts.head(8).items()) + (", ..." if len(counts) > 8 else "")
    if len(counts) == 2:
        return (f"; {column} holds two values, {shown}: pass {option('member_value')} with the one that means member")
    return (f"; {column} holds {len(counts)} values, {shown}, not the two sides of a split: pass "
            f"{option('member_value')} to make one value the members and every other value the non-members")


def normalise_table(
    raw: pd.DataFrame, base: Path, options: ManifestOptions, source: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    df = raw.copy()
    df.columns = [str(c) for c in df.columns]
    path_col = pick_column(df, options.path_column, PATH_COLUMNS, "audio path", source)
    if path_col is None:
        raise ManifestError(f"{source}: no audio path column (expected one of: {', '.join(PATH_COLUMNS)})")
    id_col = pick_column(df, options.id_column, ID_COLUMNS, "clip id", source)
    label_col = pick_column(df, options.label_column, LABEL_COLUMNS, "label", source)
    if label_col is None:
        raise ManifestError(
            f"{source}: no label column (expected one of: {', '.join(LABEL_COLUMNS)}; or pass {option('label_column')})"
        )
    text_col = pick_column(df, None, TEXT_COLUMNS, "text", source)
    speaker_col = pick_column(df, None, SPEAKER_COLUMNS, "speaker", source)

    if label_col in (path_col, id_col, text_col, speaker_col):  # e.g. --label-column speaker: keep both roles
        df["__label__"] = df[label_col]
        label_name, label_col = label_col, "__label__"
    else:
        label_name = label_col
    renames = {path_col: "path", label_col: "label"}
    if id_col is not None:
        renames[id_col] = "id"
    if text_col is not None:
        renames[text_col] = "text"
    if speaker_col is not None:
        renames[speaker_col] = "speaker"
    # A free column already named like a canonical one would be shadowed: keep it under raw_<name>.
    clash = {c: f"raw_{c}" for c in renames.values() if c in df.columns and c not in renames}
    df = df.rename(columns=clash).rename(columns=renames)

    paths = df["path"].astype("string")
    for i, p in enumerate(paths):
        if pd.isna(p) or not str(p).strip():
            raise ManifestError(f"{source}: {_row_name(i, None)}: the audio path is empty")
    df["path"] = [str(p) if os.path.isabs(str(p)) else str((base / str(p)).resolve()) for p in paths]

    if "id" not in df.columns:
        stems = [Path(p).stem for p in df["path"]]
        df.insert(0, "id", stems if len(set(stems)) == len(stems) else [os.path.relpath(p, base) for p in df["path"]])
    df["id"] = df["id"].astype(str)
    dup = df["id"][df["id"].duplicated(keep=False)]
    if not dup.empty:
        first = dup.index[0]
        again = [i for i in dup.index if df["id"].iloc[i] == dup.iloc[0]]
        raise ManifestError(
            f"{source}: duplicate id '{dup.iloc[0]}' in rows {', '.join(str(i + 1) for i in again)} "
            f"({dup.nunique()} ids duplicated; first at row {first + 1})"
        )

    raw_labels = df["label"]
    df["label"] = map_labels(df["label"], options.member_value, df["id"], source, column=f"column '{label_name}'")
    if df["label"].nunique() < 2:
        only = "members" if df["label"].iloc[0] == 1 else "non-members"
        raise ManifestError(
            f"{source}: only one class present (all {len(df)} rows are {only}); a check needs both members and "
            "non-members" + _value_hint(raw_labels, f"column '{label_name}'")
        )

    if "text" in df.columns:
        df["text"] = df["text"].astype("string").fillna("").astype(str)
    if "speaker" in df.columns:
        df["speaker"] = df["speaker"].astype("string").fillna("").astype(str)
    for c in [c for c in df.columns if c.startswith("mia_")]:
        conv = pd.to_numeric(df[c], errors="coerce")
        bad = conv.isna() & df[c].notna() & (df[c].astype(str).str.strip() != "")
        if bad.any():
            i = int(bad.to_numpy().nonzero()[0][0])
            raise ManifestError(f"{source}: {_row_name(i, df['id'])}: MIA score column '{c}' holds "
                                f"'{df[c].iloc[i]}', not a number")
        df[c] = conv.astype(float)
    for c in ("start", "end"):
        if c in df.columns:
            df[c] = pd.to_numeric(df[c], errors="coerce")

    exists = [os.path.isfile(source_file(p)) for p in df["path"]]  # a clip in a shard: the shard
    missing_rows = [i for i, ok in enumerate(exists) if not ok]
    missing = pd.DataFrame(columns=["id", "path", "stage", "message"])
    if missing_rows:
        if not options.skip_missing:
            i = missing_rows[0]
            more = f" ({len(missing_rows)} files missing in all; {option('skip_missing')} records and excludes them)"
            raise ManifestError(
                f"{source}: {_row_name(i, df['id'])}: audio file not found: {df['path'].iloc[i]}"
                + (more if len(missing_rows) > 1 else f"; {option('skip_missing')} records and excludes such rows")
            )
        missing = pd.DataFrame(
            {
                "id": df["id"].iloc[missing_rows].to_numpy(),
                "path": df["path"].iloc[missing_rows].to_numpy(),
                "label": df["label"].iloc[missing_rows].to_numpy(),
                "stage": "manifest",
                "message": "audio file not found",
            }
        )
        df = df.drop(index=df.index[missing_rows])
        if df["label"].nunique() < 2:
            raise ManifestError(f"{source}: after excluding {len(missing_rows)} missing files only one class is left")

    lead = ["id", "path", "label"] + [c for c in ("text", "speaker", "start", "end") if c in df.columns]
    df = df[lead + [c for c in df.columns if c not in lead]].reset_index(drop=True)
    return df, missing


# ------------------------------------------------------------------------------------------ text sources

_NUMBERED = re.compile(r"^(?P<base>[a-z_]+?)[_-]?(?P<n>\d+)$")
CANONICAL = ("id", "path", "label", "text", "speaker", "start", "end")


def source_name(column: str) -> str:
    """A text source's name from its column: lower case, every run of other characters than ``a-z0-9_`` one
    ``_`` (so that ``text.<source>.<feature>`` has exactly two dots)."""
    return re.sub(r"[^a-z0-9_]+", "_", str(column).lower()).strip("_")


def text_sources(table: pd.DataFrame, columns: list[str] | tuple[str, ...] | None = None) -> dict[str, list[str]]:
    """The text sources that are not a transcript (captions, prompts, descriptions, tags, lyrics) of a canonical
    manifest ``table``: source name -> the manifest columns it reads, in order.

    ``columns=None`` recognises them by name (:data:`blindcheck.inputs.vocabulary.CAPTION_COLUMNS`, any case):
    each base name is one source, and numbered columns of one base (``caption_1`` .. ``caption_5`` in Clotho) join
    that source; several annotators' captions of one clip are replicates of one measurement, so one source holds
    them all (its text is theirs joined by newlines) rather than five sources of one kind. ``columns`` given: exactly
    those columns, each its own source named after it (``()``: no source). The transcript (``text``) and the other
    canonical columns are never a source."""
    if columns is not None:
        out: dict[str, list[str]] = {}
        for c in columns:
            if c in CANONICAL or (c not in table.columns and c.lower() in TEXT_COLUMNS):
                raise ManifestError(f"text column '{c}' is read as the manifest's "
                                    f"{'transcript' if c == 'text' or c.lower() in TEXT_COLUMNS else c}, not a "
                                    "caption-like text source; a caption stored there needs another column name "
                                    "(e.g. caption)")
            if c not in table.columns:
                raise ManifestError(f"no column '{c}' for a text source (columns: "
                                    f"{', '.join(map(str, table.columns))})")
            name = source_name(c)
            if not name or name in out:
                raise ManifestError(f"text column '{c}' gives the source name '{name}', "
                                    + ("which is empty" if not name else f"as does column '{out[name][0]}'"))
            out[name] = [c]
        return out
    found: dict[str, list[tuple[int, str]]] = {}
    for c in table.columns:
        low = str(c).lower()
        if c in CANONICAL or low.startswith("mia_"):
            continue
        if low in CAPTION_COLUMNS:
            found.setdefault(source_name(low), []).append((-1, c))
            continue
        m = _NUMBERED.match(low)
        if m and m["base"] in CAPTION_COLUMNS:
            found.setdefault(source_name(m["base"]), []).append((int(m["n"]), c))
    return {name: [c for _, c in sorted(cols, key=lambda t: t[0])] for name, cols in found.items()}


def _cell_text(v) -> str:
    """One cell of a text source as text: a list (JSON Lines, Parquet) joined by newlines; missing: ''."""
    if hasattr(v, "ndim") and getattr(v, "ndim", 0) > 0:  # an array of texts (Parquet lists)
        v = v.tolist()
    if isinstance(v, (list, tuple)):
        return "\n".join(t for t in (_cell_text(x) for x in v) if t)
    if v is None or (not isinstance(v, str) and pd.isna(v)):
        return ""
    return str(v).strip()


def source_texts(table: pd.DataFrame, sources: dict[str, list[str]]) -> pd.DataFrame:
    """One text per clip and source (rows as ``table``'s, columns the source names): the source's columns' cells
    joined by newlines, empty cells left out; '' where the clip has none."""
    out = {}
    for name, cols in sources.items():
        cells = [[_cell_text(v) for v in table[c]] for c in cols]
        out[name] = ["\n".join(t for t in row if t) for row in zip(*cells, strict=True)]
    return pd.DataFrame(out, index=table.index, dtype=object)
