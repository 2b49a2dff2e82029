"""Shared fixtures: the bundled FSDD subset, one feature cache for the whole session, and generators of signals
whose true values are known.

The feature cache is keyed by each clip's content hash and each extractor's name, version and configuration, so
one cache directory serves every test that reads the same bundled clips (a user shares ``--cache-dir`` across runs
the same way): whichever test first needs a clip's features computes them and every later one reads them. Under
pytest-xdist (the README's ``-n 2 --dist loadfile``) each worker process is a session of its own, with its own cache,
and a file's tests all run on one worker. Tests of extraction itself (what is computed, resumed, reused) keep caches
of their own."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

DATA = Path(__file__).parent / "data" / "fsdd"
MUSIC = Path(__file__).parent / "data" / "music"
SR = 16_000


def music_renders() -> pd.DataFrame:
    """The rendered music set's mono excerpts (tests/data/music/manifest.csv) with their absolute paths."""
    m = pd.read_csv(MUSIC / "manifest.csv")
    m = m[m["channels"] == 1].reset_index(drop=True)
    m["abspath"] = [str(MUSIC / p) for p in m["path"]]
    return m


def clip_of(path: str):
    """One file decoded and wrapped for the extractors, as the pipeline does (id: the file's stem)."""
    from blindcheck.inputs.audio import decode, load_clip, read_bytes

    return load_clip(Path(path).stem, decode(read_bytes(path)))


@pytest.fixture(scope="session")
def fsdd_meta() -> pd.DataFrame:
    meta = pd.read_csv(DATA / "metadata.csv")
    meta["abspath"] = [str(DATA / p) for p in meta["path"]]
    return meta


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """The session's one feature cache (see the module docstring); created by the first extraction into it."""
    return tmp_path_factory.mktemp("shared") / "cache"


@pytest.fixture(scope="session")
def fsdd_pool(tmp_path_factory, fsdd_meta, shared_cache):
    """Features (the default acoustic modalities) of all 480 bundled clips, with their metadata (``id``, ``path``,
    ``label`` alternating, ``text``, ``speaker``, ``digit``, ``take``, in the features' order), and the shared cache
    they are in."""
    from blindcheck.extraction.pipeline import extract_features
    from blindcheck.inputs.manifest import load_manifest

    d = tmp_path_factory.mktemp("pool")
    df = pd.DataFrame({"id": fsdd_meta["id"], "path": fsdd_meta["abspath"], "label": [0, 1] * 240,
                       "text": fsdd_meta["text"], "speaker": fsdd_meta["speaker"], "digit": fsdd_meta["digit"],
                       "take": fsdd_meta["take"]})
    df.to_csv(d / "m.csv", index=False)
    res = extract_features(load_manifest(d / "m.csv"), shared_cache, workers=2)
    assert len(res.features) == 480
    meta = df.set_index("id").loc[res.features["id"]].reset_index()
    return res.features, meta, shared_cache


def altered_paths(base: pd.DataFrame, touched: np.ndarray, transform, folder: Path) -> list[str]:
    """Paths of the clips of ``base`` (rows with ``id`` and ``abspath``): the bundled file where ``touched`` is
    False, else ``transform(x, sr)`` of it written as 16-bit WAV ``folder/<id>.wav`` (``folder`` is created)."""
    folder.mkdir()
    paths = []
    for row, t in zip(base.itertuples(), touched, strict=True):
        if not t:
            paths.append(row.abspath)
            continue
        x, sr = sf.read(row.abspath, dtype="float32")
        p = folder / f"{row.id}.wav"
        sf.write(p, transform(x, sr), sr, subtype="PCM_16")
        paths.append(str(p))
    return paths


def tone(freq: float, dur: float, sr: int = SR, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(dur * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def pulse_train(f0: float, dur: float, sr: int = SR, jitter: float = 0.0, shimmer: float = 0.0,
                seed: int = 0, amp: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Glottal-like source: decaying 700 Hz resonances excited at (optionally jittered) instants.

    Pulse times are exact (continuous time, evaluated analytically at the samples), so the jitter is the one
    asked for and not sample quantisation. Returns the signal and the pulse instants.
    """
    rng = np.random.default_rng(seed)
    times, t = [], 0.01
    while t < dur - 0.02:
        times.append(t)
        t += (1.0 / f0) * (1.0 + jitter * rng.choice([-1.0, 1.0]))
    times = np.array(times)
    amps = amp * (1.0 + shimmer * rng.choice([-1.0, 1.0], size=len(times)))
    n = int(dur * sr)
    ts = np.arange(n) / sr
    y = np.zeros(n)
    for tk, ak in zip(times, amps, strict=True):
        i0 = int(np.ceil(tk * sr))
        seg = ts[i0:i0 + int(0.012 * sr)] - tk
        y[i0:i0 + len(seg)] += ak * np.exp(-seg / 0.0025) * np.sin(2 * np.pi * 700 * seg)
    return y.astype(np.float32), times


def write(path: Path, y: np.ndarray, sr: int = SR, **kw) -> Path:
    sf.write(path, y, sr, **kw)
    return path
