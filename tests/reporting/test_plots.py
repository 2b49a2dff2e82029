"""The report's figures drawn by real matplotlib from the bundled results (``reports/``): one colour per model
across every figure, print resolution, feature axes of any scale with their units, robust histogram ranges, AUC
intervals within [0, 1]."""

from __future__ import annotations

import io
import shutil
from dataclasses import replace
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from blindcheck import check
from blindcheck.analysis.verdict import fmt_value
from blindcheck.features import get_extractor, text
from blindcheck.features.units import axis_label, unit_of
from blindcheck.reporting import ReportData
from blindcheck.reporting.plots import (
    _STYLE,
    DPI,
    FIGURES,
    MEMBER,
    NONMEMBER,
    drawn_colours,
    fig_auc,
    fig_top_features,
    histogram_plan,
    model_colours,
    model_styles,
    render_figures,
)

ROOT = Path(__file__).resolve().parents[2]
SPLITS = ("fsdd_speaker_split", "fsdd_take_split")


def _copy(name: str, dest: Path) -> Path:
    """A copy of a bundled result directory (its result.json; the committed reports and figures left behind)."""
    shutil.copytree(ROOT / "reports" / name, dest, ignore=shutil.ignore_patterns("figures", "report.*"))
    return dest


@pytest.fixture(scope="module")
def bundled(tmp_path_factory) -> dict[str, ReportData]:
    """The two bundled results as committed: result.json alone (the per-clip files are not committed)."""
    d = tmp_path_factory.mktemp("bundled")
    return {name: ReportData.from_dir(_copy(name, d / name)) for name in SPLITS}


@pytest.fixture(scope="module")
def with_clips(tmp_path_factory) -> ReportData:
    """The bundled speaker split with its per-clip files: the check that result.json records re-run on the bundled
    manifest (its modalities and seed; one CV repeat and 199 permutations, to take seconds), and that run's blind
    scores, features and manifest put next to the bundled result.json."""
    d = tmp_path_factory.mktemp("with_clips")
    out = _copy("fsdd_speaker_split", d / "speaker")
    bundled = ReportData.from_dir(out).result
    check(ROOT / "examples" / "fsdd_speaker_split.csv", d / "rerun", cache_dir=d / "cache", workers=2, repeats=1,
          permutations=199, seed=bundled["seed"], modalities=bundled["extraction"]["modalities"])
    for f in ("blind_scores.parquet", "features.parquet", "manifest.parquet"):
        shutil.copy(d / "rerun" / f, out / f)
    data = ReportData.from_dir(out)
    scored = {c[len("score."):] for c in data.scores.columns if c.startswith("score.")}
    assert scored == {m["name"] for m in bundled["models"]}, "the re-run fits the bundled result's models"
    assert "recording.dc_offset" in [t["feature"] for t in bundled["top_features"][:6]]
    return data


def _figures(d: ReportData, folder: Path | None = None) -> dict[str, dict]:
    return {f["name"]: f for f in render_figures(d, folder)}


def test_one_colour_per_model_across_every_figure(bundled, with_clips, tmp_path):
    """Every model, attack, modality and side has one colour in every figure of every result, read back from the
    artists drawn, and it is the colour model_colours gives for it (which the report's table shows)."""
    seen: dict[str, set[str]] = {}
    per_figure = {}
    for key, d in [*bundled.items(), ("with_clips", with_clips)]:
        figs = _figures(d, tmp_path / key)
        expected = model_colours(d.result)
        models = {m["name"] for m in d.result["models"]}
        assert set(expected) == models
        assert len(set(expected.values())) == len(expected), "each model of a result has a colour of its own"
        for name, f in figs.items():
            per_figure[key, name] = f["colours"]
            for series, colour in f["colours"].items():
                assert isinstance(colour, str), f"{key}/{name}: {series} drawn in several colours {colour}"
                seen.setdefault(series, set()).add(colour)
                if series in models:
                    assert colour == expected[series], (key, name, series)
                elif series.startswith("modality:"):  # the attribution bars: the modality's xgboost model's colour
                    mod = series.split(":", 1)[1]
                    assert colour == expected[f"xgboost:{mod}"], (key, name, series)
                else:
                    assert series in ("side:members", "side:non-members"), series
        drawn = {s for c in (figs["auc"]["colours"],) for s in c}
        assert drawn == models, f"{key}: the AUC figure shows every model"
    assert {s: len(c) for s, c in seen.items() if len(c) > 1} == {}
    assert set(per_figure["with_clips", "roc"]) == {m["name"] for m in with_clips.result["models"]}
    assert seen["side:members"] == {MEMBER} and seen["side:non-members"] == {NONMEMBER}
    assert {("with_clips", n) for n in ("roc", "auc", "top_features", "attribution", "overview")} <= set(per_figure)


def test_a_models_colour_depends_on_its_name_alone_and_drawing_nothing(bundled):
    result = bundled["fsdd_speaker_split"].result
    before = plt.get_fignums()
    full = model_colours(result)
    assert plt.get_fignums() == before, "model_colours draws nothing"
    for m in result["models"]:  # the same colour in a result that holds that model alone
        assert model_colours({"models": [m]}) == {m["name"]: full[m["name"]]}
    # Attacks: a colour and a dotted line each, none a model's.
    styles = model_styles({**result, "attacks": [{"name": "loss"}, {"name": "zlib"}, {"name": "min_k"}]})
    attacks = {k: s for k, s in styles.items() if k.startswith("attack:")}
    assert len(attacks) == 3 and {s.linestyle for s in attacks.values()} == {":"}
    assert len({s.colour for s in styles.values()}) == len(styles)


def test_an_attack_keeps_its_colour_and_the_blind_scorer_its_models(with_clips):
    """Two attacks (hand-made scores of the documented shape on the re-run's clips) in the ROC and the
    dataset-inference figure: each attack one colour of its own in both; the blind scorer drawn in the colour of
    the verdict's best model."""
    rng = np.random.default_rng(3)
    s = with_clips.scores
    lab = s["label"].to_numpy().astype(int)
    att = pd.DataFrame({"id": s["id"], "label": lab, "blind_score": s["blind_score"],
                        "attack.loss": lab + rng.normal(0, 1, lab.size), "attack.zlib": rng.normal(size=lab.size)})
    curve = [{"n": n, "rate": min(1.0, n / 100)} for n in (10, 20, 40, 80)]
    d = replace(with_clips, attack_scores=att, extra={
        "attacks": {"attacks": [{"name": "loss", "spearman": 0.3}, {"name": "zlib", "spearman": 0.0}]},
        "di": {"curves": {"loss": curve, "blind": curve}, "alpha": 0.05}})
    figs = _figures(d)
    assert {"roc", "attacks", "di"} <= set(figs)
    roc, di = figs["roc"]["colours"], figs["di"]["colours"]
    models = model_colours(d.result)
    assert roc["attack:loss"] == di["attack:loss"] != roc["attack:zlib"]
    assert not {roc["attack:loss"], roc["attack:zlib"]} & set(models.values())
    best = d.result["verdict"]["best_model"]
    assert di[best] == models[best]


def test_png_at_print_resolution_with_sane_sizes(with_clips):
    """Every PNG records DPI and is that many pixels per inch of its figure; stored with a palette it stays no
    larger than the same figure as a 110-dpi RGBA PNG (what the report embedded before)."""
    figs = _figures(with_clips)
    assert set(figs) == {"roc", "auc", "top_features", "attribution", "overview"}
    with plt.rc_context(_STYLE):
        for name, f in figs.items():
            img = Image.open(io.BytesIO(f["png"]))
            assert f["dpi"] == DPI >= 200
            assert img.info["dpi"] == pytest.approx((DPI, DPI), abs=0.01)
            fig = FIGURES[name][0](with_clips)
            width_in = fig.get_size_inches()[0]
            old = io.BytesIO()
            fig.savefig(old, format="png", dpi=110)
            plt.close(fig)
            # bbox "tight" trims or adds a margin: within 10% of the figure's width at DPI
            assert abs(img.size[0] - width_in * DPI) <= 0.1 * width_in * DPI, (name, img.size)
            assert img.mode == "P"
            assert len(f["png"]) <= len(old.getvalue()), (name, len(f["png"]), len(old.getvalue()))


def _no_overlap(fig, ax) -> None:
    """After a draw: no offset text, the visible tick labels apart from each other and from the axis label."""
    fig.canvas.draw()
    assert ax.xaxis.get_offset_text().get_text() == ""
    lo, hi = sorted(ax.get_xlim())
    ticks = [t for t, v in zip(ax.get_xticklabels(), ax.get_xticks(), strict=True)
             if t.get_text() and lo <= v <= hi]
    assert len(ticks) >= 2, ax.get_xlabel()
    boxes = [t.get_window_extent() for t in ticks]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not a.overlaps(b), f"{ax.get_xlabel()}: tick labels overlap: {[t.get_text() for t in ticks]}"
    label = ax.xaxis.label.get_window_extent()
    assert not any(label.overlaps(b) for b in boxes), ax.get_xlabel()


def test_feature_axes_of_any_scale_have_no_offset_and_apart_tick_labels(with_clips):
    """The speaker split's top features, among them recording.dc_offset (values from 1e-6 to 1e-2 of full scale,
    both signs) and spectral.flatness_p10 (1e-7 to 3e-5): no offset text, tick labels that do not touch."""
    with plt.rc_context(_STYLE):
        fig = fig_top_features(with_clips)
        axes = [ax for ax in fig.axes if ax.get_visible()]
        labels = [ax.get_xlabel().split("\n")[0] for ax in axes]
        assert "recording.dc_offset" in labels and "spectral.flatness_p10" in labels
        for ax in axes:
            _no_overlap(fig, ax)
        by = dict(zip(labels, axes, strict=True))
        assert by["recording.dc_offset"].get_xscale() == "asinh"
        assert by["spectral.flatness_p10"].get_xscale() == "log"
        assert "(dBFS)" in by["recording.peak_dbfs"].get_xlabel()
        assert "(s)" in by["recording.duration_s"].get_xlabel()
        assert "full scale" in by["recording.dc_offset"].get_xlabel()
        plt.close(fig)


def _synthetic(feature: str, members: np.ndarray, nonmembers: np.ndarray) -> ReportData:
    x = np.concatenate([members, nonmembers])
    lab = np.r_[np.ones(len(members), int), np.zeros(len(nonmembers), int)]
    return ReportData(result={"top_features": [{"feature": feature}]},
                      features=pd.DataFrame({"id": [f"c{i}" for i in range(len(x))], "label": lab, feature: x}))


def _edges(ax) -> np.ndarray:
    """The bin edges of the histograms drawn in ``ax`` (the x of their step outlines)."""
    return np.unique(np.concatenate([p.get_xy()[:, 0] for p in ax.patches]))


@pytest.mark.parametrize(("feature", "centre", "spread", "label_part"), [
    ("recording.dc_offset", 2e-5, 1e-6, "\u00d710\u207b\u2075 full scale"),  # tiny, one sign: a linear axis
    ("recording.effective_bandwidth_hz", 4000.0, 5.0, "kHz"),  # large, narrow: no offset (4000 + ...)
    ("spectral.mfcc_03_mean", 0.0, 3.0, None),  # unitless: the name alone
])
def test_linear_axes_scale_the_unit_into_the_label(feature, centre, spread, label_part):
    rng = np.random.default_rng(1)
    d = _synthetic(feature, rng.normal(centre, spread, 150), rng.normal(centre + spread, spread, 150))
    with plt.rc_context(_STYLE):
        fig = fig_top_features(d)
        ax = fig.axes[0]
        assert ax.get_xscale() == "linear"
        _no_overlap(fig, ax)
        xlabel = ax.get_xlabel()
        assert xlabel == feature if label_part is None else f"({label_part})" in xlabel, xlabel
        assert "value" not in xlabel
        plt.close(fig)


def test_one_far_outlier_leaves_the_bins_on_the_bulk():
    """200 clips per side from two normals 0.5 SD apart and one clip at 10^4 SD: the bins cover the bulk (on the
    full range, as before, 24 of 25 bins would hold that one clip's emptiness), and the panel says one clip lies
    outside."""
    rng = np.random.default_rng(0)
    members, nonmembers = rng.normal(0, 1, 200), np.r_[rng.normal(0.5, 1, 199), 1e4]
    d = _synthetic("recording.snr_db", members, nonmembers)
    bulk = np.r_[members, nonmembers[:-1]]
    with plt.rc_context(_STYLE):
        fig = fig_top_features(d)
        ax = fig.axes[0]
        edges = _edges(ax)
        inside = (edges >= bulk.min()) & (edges <= bulk.max())
        assert inside.mean() >= 0.9, edges
        assert ax.get_xlim()[1] < 10
        assert ax.get_title(loc="right") == "1 of 400 clips outside"
        assert ax.get_xlabel() == "recording.snr_db\n(dB)"
        _no_overlap(fig, ax)
        plt.close(fig)
    full = np.histogram_bin_edges(np.r_[bulk, 1e4], bins=25)
    assert ((full >= bulk.min()) & (full <= bulk.max())).mean() < 0.1  # what the old full-range bins did


def test_histogram_plan_scales():
    rng = np.random.default_rng(2)
    assert histogram_plan(np.exp(rng.normal(-13, 1.5, 400))).scale == "log"  # positive, decades apart
    signed = np.r_[rng.normal(0, 2e-5, 400), rng.normal(-7e-3, 3e-4, 80)]  # the dc_offset shape
    plan = histogram_plan(signed)
    assert plan.scale == "asinh" and plan.lo <= signed.min() and plan.outside <= 0.02 * signed.size
    assert histogram_plan(rng.normal(5, 1, 400)).scale == "linear"
    assert histogram_plan(np.full(10, np.nan)) is None
    flat = histogram_plan(np.zeros(50))  # one value: a range around it, every clip inside
    assert flat.lo < 0 < flat.hi and flat.outside == 0


def test_auc_intervals_drawn_within_zero_and_one(bundled):
    """A normal-approximation bound past 1 (the speaker split's verdict holds an upper bound of 1.0004) is drawn
    at 1, and the axis ends at 1.0 with a labelled tick there."""
    d = bundled["fsdd_speaker_split"]
    result = {**d.result, "models": [{**m, "ci_high": 1.0004} if m["auc"] > 0.999 else m
                                     for m in d.result["models"]]}
    result["models"][-1] = {**result["models"][-1], "ci_low": -0.01}
    with plt.rc_context(_STYLE):
        fig = fig_auc(ReportData(result=result))
        fig.canvas.draw()
        ax = fig.axes[0]
        xs = np.concatenate([seg[:, 0] for c in ax.collections if hasattr(c, "get_segments")
                             for seg in c.get_segments()])
        assert xs.size and xs.min() >= 0 and xs.max() <= 1
        assert ax.get_xlim()[1] == 1.0
        assert "1.0" in [t.get_text() for t in ax.get_xticklabels()]
        assert drawn_colours(fig) == model_colours(result)
        plt.close(fig)


# --- units -----------------------------------------------------------------------------------------------------


def test_units_of_known_features():
    expect = {"spectral.centroid_hz_mean": "Hz", "spectral.rolloff_hz_p90": "Hz", "recording.duration_s": "s",
              "recording.peak_dbfs": "dBFS", "recording.loudness_lufs": "LUFS", "prosodic.hnr_db": "dB",
              "prosodic.jitter_local": "%", "recording.silence_ratio": "%", "spectral.mod_8_16hz": "%",
              "prosodic.f0_iqr_st": "semitones", "prosodic.f0_velocity_st_s": "semitones/s",
              "prosodic.speaking_rate": "syllables/s", "prosodic.pause_count": "count", "music.tempo_bpm": "BPM",
              "music.lra_lu": "LU", "spectral.slope_0_500_db_khz_mean": "dB/kHz", "recording.dc_offset": "full scale",
              "recording.lossy": "0/1", "text.compression_ratio": "ratio", "text.caption.n_words": "words",
              "spectral.mfcc_03_mean": "", "voice.emb_017": ""}
    assert {f: unit_of(f).axis for f in expect} == expect
    assert unit_of("prosodic.jitter_local").scale == 100
    assert axis_label("spectral.mfcc_03_mean") == "spectral.mfcc_03_mean"
    assert axis_label("recording.duration_s") == "recording.duration_s (s)"
    # Names the table does not hold: the naming conventions, else no unit.
    assert (unit_of("mydata.level_db_mean").axis, unit_of("mydata.level_db_mean").explicit) == ("dB", False)
    assert unit_of("speaker_age").axis == ""


def _extractor_names() -> list[str]:
    names = [f"{m}.{n}" for m in ("content", "recording", "spectral", "prosodic", "music", "voice")
             for n in get_extractor(m).feature_names()]
    return names + [f"text.{n}" for n in [*text.LEXICAL, "emb_000"]]


def test_every_feature_the_extractors_define_has_a_unit_from_the_table():
    missing = [f for f in _extractor_names() if not unit_of(f).explicit]
    assert missing == []


def _fmt_before(feature: str, v: float) -> str:
    """fmt_value as it was before the units table (the reasons' texts were written with it)."""
    name = feature.rsplit(".", 1)[-1]
    if name.endswith("_hz") or name == "sample_rate":
        return f"{v / 1000:.2f} kHz" if abs(v) >= 1000 else f"{v:.0f} Hz"
    for suffix, unit in (("_dbfs", "dBFS"), ("_lufs", "LUFS"), ("_db", "dB")):
        if name.endswith(suffix):
            return f"{v:.1f} {unit}"
    if name.endswith("_s"):
        return f"{v * 1000:.0f} ms" if abs(v) < 1 else f"{v:.2f} s"
    if name.endswith(("_ratio", "_fraction")):
        return f"{100 * v:.1f}%"
    return f"{v:.3g}"


def test_fmt_value_unchanged_where_it_printed_a_unit():
    """Every value that was printed with a unit is printed as before, but for the two units that were wrong
    (f0_velocity_st_s is semitones per second, not seconds; a compression ratio is not a percentage); names
    printed bare before may gain their unit."""
    fixed = {"prosodic.f0_velocity_st_s", "text.compression_ratio"}
    changed = []
    for f in _extractor_names():
        for v in (0.0123, 0.5, 3.25, 1234.5, -20.04):
            old, new = _fmt_before(f, v), fmt_value(f, v)
            if old != f"{v:.3g}" and new != old:
                changed.append(f)
    assert sorted(set(changed)) == sorted(fixed)
    assert fmt_value("prosodic.f0_velocity_st_s", 12.3) == "12.3 st/s"
    assert fmt_value("text.compression_ratio", 1.52) == "1.52"
    assert fmt_value("prosodic.f0_iqr_st", 2.5) == "2.5 st"
    assert fmt_value("spectral.centroid_hz_mean", 1234.5) == "1.23 kHz"
    assert fmt_value("prosodic.jitter_local", 0.0123) == "1.2%"
    assert fmt_value("recording.dc_offset", -1.22e-5) == "-1.22e-05"
    assert fmt_value("recording.duration_s", float("nan")) == "n/a"
