"""Packing short clips into shared Whisper windows: the pure parts (planning, packing, splitting words back,
plausibility, levels). Transcription of real speech, packed and single, is tested in test_text.py."""

from __future__ import annotations

import hashlib
import math
import random

import numpy as np
import pytest

from blindcheck.errors import BlindcheckError
from blindcheck.features.asr import SR, ASRConfig, compression_ratio, level, pack, plan_windows, plausible, split_words


def word(start, end, text="x", p=0.9):
    return {"start": start, "end": end, "word": f" {text}", "probability": p}


SPANS = [(0.5, 1.0), (1.5, 2.0), (2.5, 3.0)]  # three clips with 0.5 s gaps


def test_words_go_to_the_clip_their_midpoint_falls_in_or_is_nearest_to():
    segments = [{"no_speech_prob": 0.1, "words": [
        word(0.0, 0.9, "a"),    # starts in the leading gap, midpoint in clip 0
        word(0.9, 1.4, "b"),    # midpoint 1.15 in the gap, nearer clip 0 (0.15 vs 0.35)
        word(1.45, 2.45, "c"),  # stretched over both gaps, midpoint in clip 1
        word(2.4, 3.6, "d"),    # midpoint 3.0: clip 2
        word(3.2, 3.3, "e"),    # in the trailing gap: the last clip
    ]}]
    out, doubtful, reason = split_words(segments, SPANS)
    assert reason is None and doubtful == set()
    assert [[w["word"].strip() for w, _ in o] for o in out] == [["a", "b"], ["c"], ["d", "e"]]


def test_a_word_in_the_middle_of_a_gap_makes_both_neighbours_doubtful():
    segments = [{"no_speech_prob": 0.1, "words": [word(0.6, 0.9), word(1.6, 1.9), word(2.1, 2.4, "y"),
                                                   word(2.6, 2.9)]}]
    out, doubtful, reason = split_words(segments, SPANS)  # "y" has its midpoint at 2.25, the gap's middle
    assert reason is None and doubtful == {1, 2}
    assert [len(o) for o in out] == [1, 1, 2]
    # Between consecutive windows of one long clip the word is no doubt: either side, its transcript holds it there.
    out, doubtful, reason = split_words(segments, SPANS, joined={1})
    assert reason is None and doubtful == set() and [len(o) for o in out] == [1, 1, 2]


def test_a_window_whose_timestamps_collapse_is_not_trusted():
    spans = [(0.5 + k, 1.0 + k) for k in range(10)]
    collapsed = [{"no_speech_prob": 0.1, "words": [word(10.3, 10.4) for _ in range(10)]}]
    out, doubtful, reason = split_words(collapsed, spans)
    assert out is None and "9 of 10 clips got no words" in reason
    one_missing = [{"no_speech_prob": 0.1, "words": [word(a, b) for a, b in spans[1:]]}]
    assert split_words(one_missing, spans)[2] is None  # one empty clip in ten is allowed (then redone alone)


def test_plausibility_of_a_packed_clip():
    assert not plausible([], 1.0)
    assert plausible([(word(0, 1), 0)], 0.3)
    assert not plausible([(word(0, 1), 0)] * 3, 0.4)  # three words in 0.4 s
    assert plausible([(word(0, 1, "one"), 0), (word(1, 2, "two"), 0), (word(2, 3, "three"), 0)], 2.0)
    loop = [(word(k, k + 0.1, "seven,"), 0) for k in range(30)]
    assert not plausible(loop, 10.0)  # few enough words for 10 s, but a repetition loop
    assert compression_ratio(" seven," * 30) > 2.4 > compression_ratio(" the birch canoe slid on the smooth planks")
    assert math.isnan(compression_ratio(""))


def test_windows_are_filled_up_to_their_length_in_an_order_unrelated_to_the_input():
    rng = np.random.default_rng(0)
    tasks = [{"key": f"h{i}", "duration_s": float(d)} for i, d in enumerate(rng.uniform(0.2, 3.0, 200))]
    tasks += [{"key": "long", "duration_s": 12.0}, {"key": "unknown", "duration_s": math.nan}]
    config = ASRConfig()
    windows = plan_windows(tasks, config)
    keys = [[t["key"] for t in w] for w in windows]
    assert sorted(k for w in keys for k in w) == sorted(t["key"] for t in tasks)
    assert ["long"] in keys and ["unknown"] in keys
    packed = [w for w in windows if len(w) > 1]
    for w in packed:
        assert config.gap_s + sum(t["duration_s"] + config.gap_s for t in w) <= config.window_s
    assert np.mean([config.gap_s + sum(t["duration_s"] + config.gap_s for t in w) for w in packed[:-1]]) > 25
    shuffled = tasks[:]
    random.Random(1).shuffle(shuffled)
    assert [[t["key"] for t in w] for w in plan_windows(shuffled, config)] == keys
    assert keys[0] != [t["key"] for t in tasks[: len(keys[0])]]  # not in manifest order
    assert all(len(w) == 1 for w in plan_windows(tasks, ASRConfig(pack=False)))


def test_pack_lays_clips_out_with_silent_gaps():
    clips = [np.ones(SR // 2, np.float32), np.full(SR, 0.5, np.float32)]
    window, spans = pack(clips, 0.5)
    assert len(window) == int(0.5 * SR) * 3 + SR // 2 + SR
    assert spans == [(0.5, 1.0), (1.5, 2.5)]
    assert window[: SR // 2].max() == 0 and window[int(1.0 * SR): int(1.5 * SR)].max() == 0
    assert np.all(window[int(1.5 * SR): int(2.5 * SR)] == 0.5)


def test_level_brings_speech_to_a_common_level():
    t = np.arange(SR) / SR
    quiet = (0.01 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    loud = (0.5 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    rms = [10 * np.log10(np.mean(level(y).astype(np.float64) ** 2)) for y in (quiet, loud)]
    assert rms == pytest.approx([-20.0, -20.0], abs=0.1)
    silence = np.zeros(SR, np.float32)
    assert np.all(level(silence) == 0)
    faint = (1e-5 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    assert np.max(np.abs(level(faint))) == pytest.approx(1e-5 * 100, rel=1e-3)  # gain capped at +40 dB


def test_asr_config_is_validated():
    with pytest.raises(BlindcheckError, match="backend"):
        ASRConfig(backend="kaldi")
    with pytest.raises(BlindcheckError, match="beam"):
        ASRConfig(beam_size=0)
    with pytest.raises(BlindcheckError, match="packing"):
        ASRConfig(window_s=40)
    with pytest.raises(BlindcheckError, match="packing"):
        ASRConfig(max_packed_clip_s=27.5)
    assert ASRConfig(pack=False, window_s=40).pack is False


def test_cli_refuses_a_packing_it_cannot_do(tmp_path, fsdd_meta):
    import subprocess
    import sys

    (tmp_path / "m.csv").write_text(f"id,path,label\na,{fsdd_meta['abspath'].iloc[0]},1\nb,"
                                    f"{fsdd_meta['abspath'].iloc[1]},0\n")
    r = subprocess.run([sys.executable, "-m", "blindcheck", "extract", str(tmp_path / "m.csv"), "--out",
                        str(tmp_path / "out"), "--asr-gap", "0.01"], capture_output=True, text=True)
    assert r.returncode == 2 and "packing needs gap_s >= 0.1" in r.stderr and "Traceback" not in r.stderr


def test_a_long_clips_windows_are_packed_together_in_order():
    """The windows of one long clip lie side by side, in order, in one packed window (so that the gaps between them
    are joined: no doubt from a word at a window's edge), whatever its key, and only with other long clips' windows
    (never as a short clip's neighbours); the groups' order is set by a hash of their keys, which a round's salt
    changes; the short clips' plan is the one their own keys give."""
    from blindcheck.features.asr import window_tasks

    rng = np.random.default_rng(2)
    shorts = [{"row": i, "key": f"h{i}", "path": "x", "duration_s": float(d)}
              for i, d in enumerate(rng.uniform(0.2, 3.0, 60))]
    config = ASRConfig()
    small = {"long_s": 30.0, "count": 3, "window_s": 3.0}  # 3 x 3 s: two long clips fit in one window
    longs = [{"row": 100 + k, "key": f"long{k}", "path": "y", "policy": small} for k in range(12)]
    tasks = window_tasks([*shorts, *longs])
    orders = set()
    for salt in (0, 1):
        windows = plan_windows(tasks, config, salt=salt)
        assert sorted(str(t["row"]) for w in windows for t in w) == sorted(str(t["row"]) for t in tasks)
        for w in windows:
            assert config.gap_s + sum(t["duration_s"] + config.gap_s for t in w) <= config.window_s
            assert all("group" in t for t in w) or not any("group" in t for t in w)  # never mixed
        holding = [w for w in windows if any("group" in t for t in w)]
        assert len(holding) == 6 and all(len(w) == 6 for w in holding)  # two long clips (3 windows each) per window
        for w in holding:
            rows = [t["row"] for t in w]
            assert rows[1:3] == [(rows[0][0], 1), (rows[0][0], 2)] and rows[4:] == [(rows[3][0], 1), (rows[3][0], 2)]
        orders.add(tuple(t["row"] for w in holding for t in w))
        plain = [t["key"] for w in windows for t in w if "group" not in t]
        own = sorted(shorts, key=lambda t: hashlib.blake2b(f"{salt}|{t['key']}".encode(), digest_size=8).digest())
        assert plain == [t["key"] for t in own]  # the short clips' plan as without long clips
    assert len(orders) == 2  # the salt gives the long clips new neighbours
    # a group longer than one window still goes in order, over consecutive windows
    big = window_tasks([{"row": 7, "key": "big", "path": "z", "policy": {"long_s": 60.0, "count": 8,
                                                                       "window_s": 5.0}}])
    got = plan_windows(big, config)
    assert [t["row"] for w in got for t in w] == [(7, k) for k in range(8)] and len(got) == 2
