"""Rebuild the rendered music test set from music21's bundled corpus with FluidSynth.

Deterministic: the pieces are chosen by a fixed rule from the sorted corpus paths, every part is played by one
General MIDI instrument (Acoustic Grand Piano, program 0) so the two repertoires differ in their music and not in
their orchestration, repeats are not expanded, each piece is rendered with FluidSynth at 22.05 kHz, and the excerpt
is the first ``--seconds`` seconds after the first 50 ms frame within 40 dB of the render's loudest frame (leading
silence skipped). Mono excerpts are the channel mean resampled to 16 kHz (soxr, VHQ); the first pieces' excerpts
are also kept in stereo at 22.05 kHz (shorter, ``--stereo-seconds``) for channel tests.

Each piece is rendered with one soundfont, alternating by its index within its repertoire (even index: FluidR3,
odd: TimGM6mb), so each repertoire has half its pieces on each soundfont and the two soundfonts see the same
repertoire mix.

Needs music21, fluidsynth and the two Debian soundfonts; the tests use only the committed output.

    python tests/data/music/build.py --out tests/data/music
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

FONTS = {
    "fluidr3": "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "timgm6mb": "/usr/share/sounds/sf2/TimGM6mb.sf2",
}
RENDER_RATE = 22050
MONO_RATE = 16000
FRAME_S = 0.05
SILENCE_DB = 40.0


def _corpus_paths(repertoire: str) -> list[tuple[str, Path]]:
    from music21 import corpus

    root = Path(corpus.__file__).parent
    if repertoire == "bach":
        # The chorales: bwvNNN.N.mxl harmonisations (four voices, sometimes an instrumental part).
        paths = sorted(p for p in root.joinpath("bach").glob("bwv*.mxl"))
    elif repertoire == "ryans":
        paths = sorted(root.joinpath("ryansMammoth").glob("*.abc"))
    else:
        raise ValueError(f"unknown repertoire {repertoire!r}")
    return [(p.relative_to(root).as_posix(), p) for p in paths]


def _pick(paths: list, count: int) -> list:
    """Evenly spaced picks over the sorted list, then the rest in order as spares (deterministic)."""
    idx = np.unique(np.linspace(0, len(paths) - 1, count * 3).round().astype(int))
    first = [paths[i] for i in idx[::3]]
    rest = [paths[i] for i in idx if paths[i] not in first]
    return first + rest


def _to_midi(path: Path, midi: Path, measures: int) -> None:
    from music21 import bar, converter, instrument, spanner, stream

    score = converter.parse(str(path))
    if isinstance(score, stream.Opus):
        score = score.scores[0]
    excerpt = score.measures(0, measures)
    # Repeats are played as written, not expanded: a cut through a repeated section leaves repeat signs that
    # music21 cannot expand, and the excerpt only needs the opening seconds.
    for measure in excerpt.recurse().getElementsByClass(stream.Measure):
        if isinstance(measure.leftBarline, bar.Repeat):
            measure.leftBarline = None
        if isinstance(measure.rightBarline, bar.Repeat):
            measure.rightBarline = None
    for volta in list(excerpt.recurse().getElementsByClass(spanner.RepeatBracket)):
        volta.activeSite.remove(volta)
    for part in excerpt.parts:
        for old in list(part.recurse().getElementsByClass(instrument.Instrument)):
            old.activeSite.remove(old)
        piano = instrument.Piano()
        piano.midiProgram = 0
        part.insert(0, piano)
    excerpt.write("midi", fp=str(midi))


def _render(midi: Path, font: str, wav: Path) -> None:
    subprocess.run(
        ["fluidsynth", "-ni", "-q", "-T", "wav", "-O", "s16", "-F", str(wav), "-r", str(RENDER_RATE),
         FONTS[font], str(midi)],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def _excerpt(x: np.ndarray, seconds: float) -> tuple[np.ndarray, float] | None:
    """(samples, start seconds) of the excerpt, or None when the render is too short."""
    frame = int(FRAME_S * RENDER_RATE)
    mono = x.mean(axis=1)
    n = len(mono) // frame
    if n == 0:
        return None
    rms = np.sqrt(np.mean(mono[: n * frame].reshape(n, frame) ** 2, axis=1) + 1e-20)
    db = 20 * np.log10(rms / rms.max())
    first = int(np.argmax(db > -SILENCE_DB))
    start = first * frame
    length = int(round(seconds * RENDER_RATE))
    if start + length > len(x):
        return None
    return x[start : start + length], start / RENDER_RATE


def build(out: Path, per_repertoire: int, seconds: float, stereo: int, stereo_seconds: float,
          measures: int) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    for sub in ("mono", "stereo"):
        shutil.rmtree(out / sub, ignore_errors=True)
        (out / sub).mkdir()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        for repertoire in ("bach", "ryans"):
            kept = 0
            for rel, path in _pick(_corpus_paths(repertoire), per_repertoire):
                if kept == per_repertoire:
                    break
                font = "fluidr3" if kept % 2 == 0 else "timgm6mb"
                midi, wav = tmpdir / "x.mid", tmpdir / "x.wav"
                try:
                    _to_midi(path, midi, measures)
                except Exception:  # noqa: BLE001 - an unparsable encoding is skipped; the next spare takes its place
                    continue
                _render(midi, font, wav)
                x, rate = sf.read(wav, dtype="float64", always_2d=True)
                assert rate == RENDER_RATE
                cut = _excerpt(x, seconds)
                if cut is None:
                    continue
                clip, start = cut
                piece = f"{repertoire}_{kept:02d}"
                mono = soxr.resample(clip.mean(axis=1), RENDER_RATE, MONO_RATE, quality="VHQ")
                mono_path = f"mono/{piece}_{font}.flac"
                sf.write(out / mono_path, mono, MONO_RATE, subtype="PCM_16", format="FLAC")
                rows.append(dict(id=f"{piece}_{font}", path=mono_path, piece=piece, repertoire=repertoire,
                                 soundfont=font, source=rel, channels=1, samplerate=MONO_RATE,
                                 start_s=round(start, 3), duration=seconds))
                if kept < stereo:
                    stereo_path = f"stereo/{piece}_{font}.flac"
                    stereo_clip = clip[: int(round(stereo_seconds * RENDER_RATE))]
                    sf.write(out / stereo_path, stereo_clip, RENDER_RATE, subtype="PCM_16", format="FLAC")
                    rows.append(dict(id=f"{piece}_{font}_stereo", path=stereo_path, piece=piece,
                                     repertoire=repertoire, soundfont=font, source=rel, channels=2,
                                     samplerate=RENDER_RATE, start_s=round(start, 3), duration=stereo_seconds))
                kept += 1
            if kept < per_repertoire:
                raise RuntimeError(f"only {kept} usable pieces in {repertoire}")
    with open(out / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent)
    parser.add_argument("--per-repertoire", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--stereo", type=int, default=2, help="stereo 22.05 kHz renders kept per repertoire")
    parser.add_argument("--stereo-seconds", type=float, default=3.0, help="length of the stereo excerpts")
    parser.add_argument("--measures", type=int, default=12, help="measures written to MIDI (pickup included)")
    args = parser.parse_args(argv)
    build(args.out, args.per_repertoire, args.seconds, args.stereo, args.stereo_seconds, args.measures)


if __name__ == "__main__":
    main()
