"""The formats benchmarks ship in: Hugging Face Hub Parquet shards and lhotse manifests.

**Hub shards.** An audio dataset on the Hub is a set of Parquet shards (``data/train-00000-of-00004.parquet``)
whose audio column is a struct ``{bytes, path}`` holding each encoded file. :func:`read_shards` takes a shard,
a directory of shards or a glob, and makes one manifest row per shard row; the clip's path is a reference
``<shard>#<column>=<row>`` (see :func:`blindcheck.inputs.audio.shard_ref`). Nothing is written out: the audio is
decoded from the bytes in memory (:mod:`blindcheck.inputs.audio` reads a shard one row group at a time), and the cache
key is the hash of those bytes, as for a file. Only the small columns are read here (the audio column's
``path`` field, never its bytes). Without a label column the split in the shard's name (``train-...``,
``test-...``) or folder is the label, as in an audiofolder.

**lhotse.** Recordings, supervisions and cuts as JSONL (gzipped or not) are read through the ``lhotse``
library (extra ``lhotse``), in a spawned process: lhotse imports torch, whose OpenMP runtime must never share
the process that runs xgboost. A cut is a clip: its recording's file, from ``cut.start`` for ``cut.duration``
seconds (a cut that spans its whole recording is the file itself); its supervisions give ``text`` (joined) and
``speaker``, and their and the cut's ``custom`` fields give the label and metadata. Without cuts, each
supervision of a recordings + supervisions pair is a clip. What blindcheck cannot analyse faithfully is refused
by name: mixed or padding cuts, recordings held as commands, URLs or in memory, recordings with transforms
(speed perturbation, resampling), and cuts or supervisions of some channels of a multi-channel recording
(blindcheck analyses the mix of all channels).
"""

from __future__ import annotations

import glob as globlib
import gzip
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd

from blindcheck.errors import ManifestError, MissingDependencyError
from blindcheck.inputs.audio import shard_ref

GLOB_CHARS = set("*?[")

# ------------------------------------------------------------------------------------------ Hub shards


def is_glob(source: str) -> bool:
    return any(c in GLOB_CHARS for c in str(source))


def _audio_column(schema, shard: str) -> str | None:
    import pyarrow as pa

    structs = [f.name for f in schema if pa.types.is_struct(f.type) and
               {"bytes", "path"} <= {f.type.field(i).name for i in range(f.type.num_fields)}]
    if not structs:
        return None
    return "audio" if "audio" in structs else structs[0]


def is_shard(path: Path) -> bool:
    """A Parquet file whose audio column is a struct {bytes, path}."""
    import pyarrow.parquet as pq

    try:
        return _audio_column(pq.read_schema(path), str(path)) is not None
    except Exception:
        return False


def find_shards(source: str | os.PathLike) -> list[Path]:
    """The shards named by ``source``: a glob, a directory (searched recursively) or one file."""
    s = str(source)
    if is_glob(s):
        found = sorted(Path(p) for p in globlib.glob(s, recursive=True) if p.endswith(".parquet"))
    elif Path(s).is_dir():
        found = sorted(p for p in Path(s).rglob("*.parquet") if not p.name.startswith("."))
    else:
        found = [Path(s)]
    return [p.resolve() for p in found]


def _split_of(shard: Path) -> str:
    """The split a shard belongs to: its name's prefix (``train-00000-of-00002``) or its folder (``test/0.parquet``),
    whichever names a split; else empty."""
    from blindcheck.inputs.vocabulary import MEMBER_VALUES, NONMEMBER_VALUES

    for name in (shard.stem.split("-")[0].lower(), shard.parent.name.lower()):
        if name in MEMBER_VALUES | NONMEMBER_VALUES:
            return name
    return ""


def read_shards(source: str | os.PathLike) -> pd.DataFrame:
    """One row per clip of the shards named by ``source``: their columns other than the audio, a ``path``
    (shard reference), ``audio_name`` (the path stored with the bytes) and ``shard_split``."""
    import pyarrow.parquet as pq

    from blindcheck.inputs.vocabulary import LABEL_COLUMNS

    shards = find_shards(source)
    if not shards:
        raise ManifestError(f"{source}: no Parquet shards found")
    frames = []
    for shard in shards:
        try:
            schema = pq.read_schema(shard)
        except Exception as exc:
            raise ManifestError(f"{shard}: not a readable Parquet file: {exc}") from exc
        column = _audio_column(schema, str(shard))
        if column is None:
            raise ManifestError(f"{shard}: no audio column (a struct with 'bytes' and 'path' fields, as the Hugging "
                                "Face Hub stores audio); columns: " + ", ".join(schema.names))
        others = [n for n in schema.names if n != column]
        try:
            table = pq.read_table(shard, columns=[*others, f"{column}.path"])  # never the bytes
        except Exception as exc:
            raise ManifestError(f"{shard}: cannot be read: {exc}") from exc
        df = table.to_pandas()
        df = df.rename(columns={df.columns[-1]: "audio_name"})
        df.insert(0, "path", [shard_ref(str(shard), column, i) for i in range(len(df))])
        df["shard_split"] = _split_of(shard)
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    if df.empty:
        raise ManifestError(f"{source}: the shards hold no rows")
    has_label = any(str(c).lower() in LABEL_COLUMNS for c in df.columns if c != "shard_split")
    if not has_label and (df["shard_split"] != "").all():
        df["label"] = df["shard_split"]
    if not any(str(c).lower() in ("id", "utt_id", "utterance_id", "uid", "key", "clip_id") for c in df.columns):
        names = [Path(str(n)).stem if isinstance(n, str) and n else "" for n in df["audio_name"]]
        ids = names if all(names) and len(set(names)) == len(names) else \
            [f"{Path(r.split('#')[0]).stem}:{r.rsplit('=', 1)[1]}" for r in df["path"]]
        df.insert(0, "id", ids)
    return df


# ------------------------------------------------------------------------------------------------ lhotse

LHOTSE_KINDS = ("cuts", "recordings", "supervisions")


def _first_record(path: Path) -> dict | None:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    obj = json.loads(line)
                    return obj if isinstance(obj, dict) else None
    except Exception:
        return None
    return None


def lhotse_kind(path: Path) -> str | None:
    """``cuts``, ``recordings`` or ``supervisions`` when ``path`` is a lhotse JSONL manifest, else None."""
    rec = _first_record(path)
    if rec is None:
        return None
    if "type" in rec and rec["type"] in ("MonoCut", "MixedCut", "PaddingCut", "MultiCut", "DataCut"):
        return "cuts"
    if {"sources", "sampling_rate", "num_samples"} <= rec.keys():
        return "recordings"
    if {"recording_id", "start", "duration"} <= rec.keys() and "type" not in rec:
        return "supervisions"
    return None


def _is_jsonl(p: Path) -> bool:
    return p.name.endswith((".jsonl", ".jsonl.gz"))


def find_lhotse(source: Path) -> dict[str, Path] | None:
    """The lhotse manifests that ``source`` (a file or a directory) names, by kind; None if it names none."""
    if source.is_dir():
        found: dict[str, list[Path]] = {}
        for p in sorted(source.iterdir()):
            kind = lhotse_kind(p) if p.is_file() and _is_jsonl(p) else None
            if kind:
                found.setdefault(kind, []).append(p)
        for kind, paths in found.items():
            if len(paths) > 1:
                raise ManifestError(f"{source}: several lhotse {kind} manifests ({', '.join(p.name for p in paths)});"
                                    " name the one to use")
        return {k: v[0] for k, v in found.items()} or None
    kind = lhotse_kind(source) if _is_jsonl(source) else None
    if kind is None:
        return None
    out = {kind: source}
    if kind != "cuts":  # its partner beside it: recordings <-> supervisions
        other = "supervisions" if kind == "recordings" else "recordings"
        twin = source.parent / source.name.replace(kind, other)
        if twin != source and twin.exists():
            out[other] = twin
    return out


def read_lhotse(files: dict[str, Path]) -> pd.DataFrame:
    """One row per cut (or per supervision, without cuts), read by lhotse in a spawned process."""
    import importlib.util

    if importlib.util.find_spec("lhotse") is None:
        raise MissingDependencyError("lhotse manifests are read with the lhotse library: "
                                     "pip install 'blindcheck[lhotse]'")
    if "cuts" not in files and not {"recordings", "supervisions"} <= files.keys():
        have = ", ".join(f"{k} ({p.name})" for k, p in files.items())
        raise ManifestError(f"lhotse manifests: found {have}; a check needs cuts, or recordings together with "
                            "supervisions (which carry the labels)")
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        rows = pool.submit(_lhotse_rows, {k: str(v) for k, v in files.items()}).result()
    if isinstance(rows, str):
        raise ManifestError(rows)
    if not rows:
        raise ManifestError(f"{next(iter(files.values()))}: the lhotse manifest has no entries")
    return pd.DataFrame(rows)


def _recording_file(rec, where: str) -> str:
    if rec.transforms:
        names = ", ".join(str(t.get("name", t) if isinstance(t, dict) else type(t).__name__) for t in rec.transforms)
        raise ValueError(f"{where}: recording '{rec.id}' has transforms ({names}); blindcheck analyses the stored "
                         "audio, so apply them and write the audio out first")
    if len(rec.sources) != 1 or rec.sources[0].type != "file":
        kinds = ", ".join(s.type for s in rec.sources)
        raise ValueError(f"{where}: recording '{rec.id}' is not held in one audio file (sources: {kinds}); "
                         "blindcheck reads audio files only")
    return str(rec.sources[0].source)


def _check_channels(rec, channel, what: str, where: str) -> None:
    """blindcheck analyses a recording's mono mix: a cut or supervision of some of its channels is refused."""
    chosen = set(channel) if isinstance(channel, list | tuple) else {channel} if channel is not None else None
    if rec.num_channels > 1 and chosen is not None and chosen != set(rec.channel_ids):
        raise ValueError(f"{where}: {what} takes channel(s) {sorted(chosen)} of the {rec.num_channels}-channel "
                         f"recording '{rec.id}'; blindcheck analyses the mix of all channels, so write the channel "
                         "out to its own file first")


def _flat(custom: dict | None) -> dict:
    return {str(k): v for k, v in (custom or {}).items() if isinstance(v, str | int | float | bool) or v is None}


def _speakers(sups) -> str:
    return "+".join(dict.fromkeys(s.speaker for s in sups if s.speaker)) if sups else ""


def _lhotse_rows(files: dict[str, str]) -> list[dict] | str:
    """In the spawned process: the manifest rows, or a message naming what cannot be read (the first three
    problems, and how many there are)."""
    from blindcheck.runtime.hubs import offline

    offline()
    from lhotse import CutSet, RecordingSet, SupervisionSet, load_manifest
    from lhotse.cut import MonoCut

    rows: list[dict] = []
    problems: list[str] = []
    try:
        if "cuts" in files:
            where = files["cuts"]
            cuts = load_manifest(where)
            if not isinstance(cuts, CutSet):
                return f"{where}: not a lhotse cut set"
            for cut in cuts:
                try:
                    if not isinstance(cut, MonoCut):
                        raise ValueError(f"{where}: cut '{cut.id}' is a {type(cut).__name__}; blindcheck analyses "
                                         "single-recording cuts (MonoCut) only")
                    if cut.recording is None:
                        raise ValueError(f"{where}: cut '{cut.id}' has no recording")
                    rec = cut.recording
                    path = _recording_file(rec, where)
                    _check_channels(rec, cut.channel, f"cut '{cut.id}'", where)
                except ValueError as exc:
                    problems.append(str(exc))
                    continue
                sups = sorted(cut.supervisions, key=lambda s: s.start)
                whole = cut.start == 0 and abs(cut.duration - rec.duration) < 0.5 / rec.sampling_rate
                row = {"id": cut.id, "path": path, "recording_id": rec.id,
                       "start": float("nan") if whole else float(cut.start),
                       "end": float("nan") if whole else float(cut.start + cut.duration),
                       "text": " ".join(s.text.strip() for s in sups if s.text), "speaker": _speakers(sups)}
                for s in sups:
                    row.update({k: v for k, v in _flat(s.custom).items() if k not in row})
                row.update(_flat(cut.custom))
                rows.append(row)
        else:
            where = files["supervisions"]
            recs = load_manifest(files["recordings"])
            sups = load_manifest(where)
            if not isinstance(recs, RecordingSet) or not isinstance(sups, SupervisionSet):
                return f"{files['recordings']} / {where}: not a lhotse recording and supervision set"
            for s in sups:
                try:
                    if s.recording_id not in recs:
                        raise ValueError(f"{where}: supervision '{s.id}' refers to recording '{s.recording_id}', "
                                         f"which is not in {files['recordings']}")
                    rec = recs[s.recording_id]
                    path = _recording_file(rec, files["recordings"])
                    _check_channels(rec, s.channel, f"supervision '{s.id}'", where)
                except ValueError as exc:
                    problems.append(str(exc))
                    continue
                whole = s.start == 0 and abs(s.duration - rec.duration) < 0.5 / rec.sampling_rate
                rows.append({"id": s.id, "path": path, "recording_id": rec.id,
                             "start": float("nan") if whole else float(s.start),
                             "end": float("nan") if whole else float(s.start + s.duration),
                             "text": (s.text or "").strip(), "speaker": s.speaker or "", **_flat(s.custom)})
    except Exception as exc:
        return f"{', '.join(files.values())}: lhotse cannot read it: {type(exc).__name__}: {exc}"
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        return f"{len(problems)} entries cannot be analysed: " + "; ".join(problems[:3]) + more
    return rows
