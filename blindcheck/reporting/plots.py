"""The report's figures (matplotlib, Agg backend, Okabe–Ito colour-blind-safe palette).

Each ``fig_*`` function takes a :class:`~blindcheck.reporting.data.ReportData` and returns a figure, or None when
the data it draws are absent; :func:`render_figures` saves every figure as PNG (at :data:`DPI`) and PDF under
``figures/``.

One colour per model in every figure: :func:`model_styles` (and :func:`model_colours`, its colours alone, for a
swatch in a table) gives each blind model a colour from its modality (the same colour as that modality's bars in
the attribution figure), shaded and dashed by its kind, and each attack a colour and a dotted line of its own.
A model's style depends on its name alone, so it is the same whichever other models a result holds. Members and
non-members are drawn in :data:`MEMBER` and :data:`NONMEMBER` in the figures that compare the sides (these show
no model).

Feature axes take their unit from :func:`blindcheck.features.units.unit_of`, and their range and scale from the
data (:func:`histogram_plan`): the pooled 1st-99th percentile where the tails would stretch the bins (the clips
outside are counted in the panel), a log axis for a positive feature spanning orders of magnitude, an asinh axis
(linear near zero, logarithmic beyond) for a signed one, and a power of ten in the label instead of an offset.
"""

from __future__ import annotations

import io
import math
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.collections import Collection, LineCollection  # noqa: E402
from matplotlib.colors import to_hex, to_rgb  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.markers import MarkerStyle  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import (  # noqa: E402
    FuncFormatter,
    LogLocator,
    MaxNLocator,
    NullFormatter,
    NullLocator,
    ScalarFormatter,
)

from blindcheck.features.units import unit_of  # noqa: E402
from blindcheck.reporting.data import ReportData  # noqa: E402

DPI = 200  # PNG resolution: a 9-inch figure is 1800 px wide, sharp at a paper's column or page width
_PNG_COLOURS = 256  # PNGs are stored with a palette of this many colours (the figures hold far fewer distinct ones)

# Okabe & Ito (2008): distinguishable under the common colour-vision deficiencies. Yellow (#F0E442) is left out:
# too faint for thin lines on white. One colour per modality; "all" (every feature) is black.
MODALITY = {"recording": "#e69f00", "spectral": "#0072b2", "prosodic": "#009e73", "text": "#cc79a7",
            "voice": "#56b4e9", "music": "#d55e00", "all": "#000000", "content": "#999933"}
# Modalities outside that list (a text source's ``text.caption`` takes text's colour): picked by a hash of the
# name from Paul Tol's muted scheme, so a name keeps its colour from one result to the next.
_EXTRA = ["#332288", "#88ccee", "#44aa99", "#117733", "#ddcc77", "#cc6677", "#aa4499", "#882255"]
# Per kind of model: how far its colour is shaded from the modality's (negative: towards black, positive: towards
# white), its line style and its marker.
_KINDS: dict[str, tuple[float, str | tuple, str]] = {
    "xgboost": (0.0, "-", "o"), "logreg": (0.45, "--", "s"), "single": (0.62, "-.", "D"),
    "tfidf": (-0.4, (0, (5, 1.5, 1, 1.5, 1, 1.5)), "^")}
_OTHER_KIND = (-0.25, (0, (8, 2)), "v")
# Attacks: dark colours of their own, far from every model's (the pinks and greens are the models'), dotted, in
# the order of their names.
_ATTACKS = ["#332288", "#8c510a", "#01665e", "#a50026", "#666600", "#5e3c99"]
MEMBER, NONMEMBER = "#d55e00", "#0072b2"
_STYLE = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8, "figure.dpi": 110,
          "axes.spines.top": False, "axes.spines.right": False, "savefig.bbox": "tight",
          "axes.formatter.useoffset": False}


@dataclass(frozen=True)
class SeriesStyle:
    """How one model or attack is drawn, in every figure."""

    colour: str  # "#rrggbb"
    linestyle: str | tuple
    marker: str


def _shade(colour: str, f: float) -> str:
    """``colour`` moved a share ``f`` of the way to white (f > 0) or to black (f < 0)."""
    rgb = np.array(to_rgb(colour))
    rgb = rgb + (1 - rgb) * f if f > 0 else rgb * (1 + f)
    return to_hex(np.clip(rgb, 0, 1))


def modality_colour(modality: str) -> str:
    """The colour of a modality: fixed for the known ones, a text source (``text.<name>``) a shade of text's, any
    other one picked by a hash of its name (the same name, the same colour)."""
    if modality in MODALITY:
        return MODALITY[modality]
    h = zlib.crc32(modality.encode("utf-8"))
    parent = modality.split(".", 1)[0]
    if parent in MODALITY:
        return _shade(MODALITY[parent], (-0.35, 0.35, -0.55, 0.55)[h % 4])
    return _EXTRA[h % len(_EXTRA)]


def model_style(name: str, modality: str | None = None, kind: str | None = None) -> SeriesStyle:
    """The style of the blind model ``name`` (``kind:modality``, e.g. ``xgboost:recording``): its modality's colour,
    shaded by its kind, with its kind's line style and marker. It depends on the name alone."""
    k, _, m = name.partition(":")
    kind, modality = kind or k, modality or m or "all"
    shade, ls, marker = _KINDS.get(kind, _OTHER_KIND)
    return SeriesStyle(_shade(modality_colour(modality), shade), ls, marker)


def _attack_names(result: dict, extra: Iterable[str] = ()) -> list[str]:
    att = result.get("attacks")
    names = [str(a.get("name")) for a in att if isinstance(a, dict)] if isinstance(att, list) else []
    return sorted(set(names) | set(extra))


def model_styles(result: dict, attacks: Iterable[str] = ()) -> dict[str, SeriesStyle]:
    """Every blind model of ``result`` (its ``models``), by name, with its :func:`model_style`; and every attack
    (those of result's ``attacks`` section and ``attacks``) under ``attack:<name>``, dotted, a colour each in
    the order of their names."""
    out = {str(m["name"]): model_style(str(m["name"]), m.get("modality"), m.get("kind"))
           for m in result.get("models") or [] if isinstance(m, dict) and m.get("name")}
    for i, a in enumerate(_attack_names(result, attacks)):
        out[f"attack:{a}"] = SeriesStyle(_ATTACKS[i % len(_ATTACKS)], ":", "x")
    return out


def model_colours(result: dict, attacks: Iterable[str] = ()) -> dict[str, str]:
    """The colour (``#rrggbb``) of every model and attack of ``result`` (see :func:`model_styles`): the one each
    has in every figure. Draws nothing."""
    return {k: s.colour for k, s in model_styles(result, attacks).items()}


def _styles(d: ReportData) -> dict[str, SeriesStyle]:
    """:func:`model_styles` of ``d`` with every attack it names anywhere (its attacks section, the attack columns of
    attacks.parquet, the dataset-inference curves), so that an attack has one colour in every figure."""
    names = {str(x.get("name")) for x in _attacks(d)}
    a = d.attack_scores
    if a is not None:
        names |= {n for _, n in _attack_columns(a)}
    di = d.section("di")
    curves = (di.get("curves") or di.get("rejection")) if isinstance(di, dict) else None
    models = {str(m.get("name")) for m in d.result.get("models") or []}
    if isinstance(curves, dict):
        names |= {str(k) for k in curves if str(k) != "blind" and str(k) not in models}
    return model_styles(d.result, names)


def _blind_style(d: ReportData, styles: dict[str, SeriesStyle]) -> tuple[str, SeriesStyle]:
    """The blind score's model (the verdict's best model) and its style."""
    best = str((d.result.get("verdict") or {}).get("best_model") or "")
    return best, styles.get(best) or model_style(best or "xgboost:all")


def _roc(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.metrics import roc_curve

    ok = np.isfinite(scores)
    fpr, tpr, _ = roc_curve(labels[ok], scores[ok])
    return fpr, tpr


def _attack_columns(a) -> list[tuple[str, str]]:
    """(column, attack name) of the attack score columns of attacks.parquet."""
    return [(c, c.split(".", 1)[-1]) for c in a.columns if c.startswith("attack.") or c.startswith("mia_")]


def fig_roc(d: ReportData) -> Figure | None:
    """ROC of every blind model (and attack), linear and with a log FPR axis for the low-FPR region."""
    if d.scores is None:
        return None
    curves = []
    labels = d.scores["label"].to_numpy().astype(int)
    aucs = {m.get("name"): m.get("auc") for m in d.result.get("models") or []}
    a = d.attack_scores
    attack_cols = _attack_columns(a) if a is not None and "label" in a.columns else []
    styles = _styles(d)
    for c in d.scores.columns:
        if c.startswith("score."):
            name = c[len("score."):]
            curves.append((f"{name} (AUC {aucs[name]:.2f})" if aucs.get(name) is not None else name,
                           *_roc(labels, d.scores[c].to_numpy(float)), name,
                           styles.get(name) or model_style(name)))
    for c, name in attack_cols:
        curves.append((f"attack {name}", *_roc(a["label"].to_numpy().astype(int), a[c].to_numpy(float)),
                       f"attack:{name}", styles[f"attack:{name}"]))
    if not curves:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.8 + 0.18 * math.ceil(len(curves) / 3)))
    floor = max(1e-3, 1 / max(int((labels == 0).sum()), 1))
    for label, fpr, tpr, gid, st in curves:
        lw = 1.8 if st.linestyle == ":" else 1.4
        ax1.plot(fpr, tpr, ls=st.linestyle, color=st.colour, lw=lw, label=label, gid=gid)
        ax2.plot(np.maximum(fpr, floor / 2), tpr, ls=st.linestyle, color=st.colour, lw=lw, gid=gid)
    grid = np.logspace(math.log10(floor / 2), 0, 50)
    for ax, x in ((ax1, [0, 1]), (ax2, grid)):
        ax.plot(x, x, ":", color="0.5", lw=1, label="chance" if ax is ax1 else None)
        ax.set_ylabel("true-positive rate (share of members)")
        ax.set_ylim(0, 1.01)
    ax1.set_xlabel("false-positive rate (share of non-members)")
    ax1.set_title("ROC of the blind models (out-of-fold)")
    ax2.set_xscale("log")
    ax2.set_xlim(floor / 2, 1)
    ax2.axvline(0.01, color="0.6", lw=0.8, ls="--")
    ax2.set_xlabel("false-positive rate, log scale (finest: 1 / non-members)")
    ax2.set_title("low-FPR region (dashed: 1% FPR)")
    # Below the panels: inside, the legend hides the curves of models below chance.
    fig.legend(loc="lower center", ncol=3, frameon=False, bbox_to_anchor=(0.5, 0), handlelength=3)
    fig.tight_layout(rect=(0, 0.06 * math.ceil((len(curves) + 1) / 3), 1, 1))
    return fig


def fig_auc(d: ReportData) -> Figure | None:
    """Blind AUC of each model (one per modality and the combined ones) with its confidence interval, each model
    in its colour and marker; intervals are drawn within [0, 1] (a normal-approximation bound can pass 1)."""
    models = [m for m in d.result.get("models") or [] if m.get("auc") is not None]
    if not models:
        return None
    models = sorted(models, key=lambda m: m["auc"])
    styles = model_styles(d.result)
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(models) + 1.2))
    y = np.arange(len(models))
    auc = np.clip(np.array([m["auc"] for m in models], float), 0, 1)
    lo = np.clip([m.get("ci_low") if m.get("ci_low") is not None else m["auc"] for m in models], 0, 1)
    hi = np.clip([m.get("ci_high") if m.get("ci_high") is not None else m["auc"] for m in models], 0, 1)
    for yi, m, a, low, high in zip(y, models, auc, lo, hi, strict=True):
        st = styles[m["name"]]
        ax.errorbar([a], [yi], xerr=[[a - min(low, a)], [max(high, a) - a]], fmt="none", ecolor=st.colour,
                    capsize=3, lw=1.2, clip_on=False, gid=m["name"])
        ax.scatter([a], [yi], color=st.colour, marker=st.marker, zorder=3, s=32, clip_on=False, gid=m["name"])
    ax.axvline(0.5, color="0.5", ls=":", lw=1, label="chance (0.5)")
    tol = (d.result.get("settings") or {}).get("tolerated_auc")
    if tol is not None:
        ax.axvline(tol, color="0.2", ls="--", lw=1, label=f"tolerated AUC ({tol:.2f})")
    ax.set_yticks(y, [m["name"] for m in models])
    alpha = (d.result.get("settings") or {}).get("alpha", 0.05)
    ax.set_xlabel(f"blind AUC (out-of-fold) with {100 * (1 - alpha):.0f}% CI")
    ax.set_xlim(min(0.3, float(lo.min()) - 0.02), 1.0)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=8, steps=[1, 2, 2.5, 5, 10]))
    ax.set_title("blind AUC per model (colour: modality; marker: kind)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12 - 0.5 / len(models)), ncol=2, frameon=False)
    return fig


# --- feature axes ----------------------------------------------------------------------------------------------


@dataclass
class HistogramPlan:
    """How to draw one feature's values: axis scale, range, bin edges and what falls outside."""

    scale: str  # "linear", "log" or "asinh"
    lo: float
    hi: float
    edges: np.ndarray
    outside: int  # finite values outside [lo, hi]
    total: int  # finite values
    linear_width: float = 1.0  # asinh's linear region


def _robust_range(t: np.ndarray, tail: float = 0.25) -> tuple[float, float]:
    """[lo, hi] on (transformed) values ``t``: from the smallest to the largest value within ``tail`` times the
    1st-99th percentile span beyond those percentiles (every value, when no tail is longer; the far values
    alone left out otherwise)."""
    p1, p99 = np.percentile(t, [1, 99])
    w = p99 - p1
    if w <= 0:
        w = float(t.max() - t.min())
    near = t[(t >= p1 - tail * w) & (t <= p99 + tail * w)]
    lo, hi = float(near.min()), float(near.max())
    if hi <= lo:
        pad = 0.05 * abs(lo) if lo else 0.5
        lo, hi = lo - pad, hi + pad
    return lo, hi


def histogram_plan(x: np.ndarray, bins: int = 25) -> HistogramPlan | None:
    """The axis for the pooled values ``x`` of one feature (both sides): a log axis when they are positive and
    span two orders of magnitude or more (1st to 99th percentile), an asinh axis when they take both signs and
    the largest (99th percentile of |x|) are a hundred times the typical (median |x|), else linear; the range of
    :func:`_robust_range` in that scale, ``bins`` equal bins in it. None when no value is finite."""
    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return None
    ax_ = np.abs(x)
    med, big = float(np.median(ax_)), float(np.percentile(ax_, 99))
    if x.min() > 0 and np.percentile(x, 99) >= 100 * np.percentile(x, 1):
        lo, hi = _robust_range(np.log10(x))
        plan = HistogramPlan("log", 10 ** lo, 10 ** hi, np.logspace(lo, hi, bins + 1), 0, x.size)
    elif x.min() < 0 < x.max() and med > 0 and big >= 100 * med:
        w = med
        lo, hi = _robust_range(np.arcsinh(x / w))
        plan = HistogramPlan("asinh", w * math.sinh(lo), w * math.sinh(hi),
                             w * np.sinh(np.linspace(lo, hi, bins + 1)), 0, x.size, w)
    else:
        lo, hi = _robust_range(x)
        plan = HistogramPlan("linear", lo, hi, np.linspace(lo, hi, bins + 1), 0, x.size)
    # Bin edges and the range are the same numbers up to rounding: count with a relative tolerance.
    eps = 1e-9 * max(abs(plan.lo), abs(plan.hi))
    plan.outside = int(((x < plan.lo - eps) | (x > plan.hi + eps)).sum())
    return plan


_SUPERSCRIPT = str.maketrans("-0123456789", "\u207b\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079")


def _display(feature: str, plan: HistogramPlan | None, x: np.ndarray) -> tuple[float, str]:
    """The factor from stored values to the axis' numbers, and the text in the label's parentheses: the unit
    (kHz for Hz in the thousands), a power of ten for a linear axis whose numbers would be tiny or huge, and the
    scale when not linear."""
    unit = unit_of(feature)
    factor, text = unit.scale, unit.axis
    finite = np.abs(np.asarray(x, float)[np.isfinite(x)]) * unit.scale
    top = float(max(abs(plan.lo), abs(plan.hi)) * unit.scale) if plan is not None else \
        (float(finite.max()) if finite.size else 0.0)
    if unit.axis == "Hz" and top >= 1000:
        factor, text = factor * 1e-3, "kHz"
    elif (plan is None or plan.scale == "linear") and top > 0 and (top < 1e-2 or top >= 1e4):
        e = math.floor(math.log10(top))
        factor *= 10.0 ** -e
        text = f"\u00d710{str(e).translate(_SUPERSCRIPT)}" + (f" {text}" if text else "")
    if plan is not None and plan.scale != "linear":
        text = f"{text}, {plan.scale} scale" if text else f"{plan.scale} scale"
    return factor, text


def _label(feature: str, text: str, wrap: bool = False) -> str:
    if not text:
        return feature
    return f"{feature}\n({text})" if wrap else f"{feature} ({text})"


def _asinh_ticks(lo: float, hi: float, w: float, most: int = 5) -> list[float]:
    """Ticks for an asinh axis over [lo, hi] with linear width ``w``: 0 (where in range) and signed powers of ten,
    thinned so that neighbours are at least a sixth of the axis apart (in its own scale), at most ``most``."""
    t = lambda v: math.asinh(v / w)  # noqa: E731
    e0, e1 = math.floor(math.log10(w)), math.ceil(math.log10(max(abs(lo), abs(hi), w)))
    cands = sorted({0.0, *(sgn * 10.0 ** e for e in range(e0, e1 + 1) for sgn in (-1, 1))})
    cands = [c for c in cands if lo <= c <= hi]
    gap = (t(hi) - t(lo)) / 6
    keep: list[float] = []
    # Zero first, then the widest (the far decades tell the scale), filling inwards where there is room.
    for c in sorted(cands, key=lambda c: (c != 0, -abs(t(c)), c)):
        if all(abs(t(c) - t(k)) >= gap for k in keep) and len(keep) < most:
            keep.append(c)
    return sorted(keep)


def _signed_decade(v: float) -> str:
    if v == 0:
        return "0"
    sign = "\u2212" if v < 0 else ""
    return f"{sign}10{str(round(math.log10(abs(v)))).translate(_SUPERSCRIPT)}"


def _side_histograms(ax, feature: str, x: np.ndarray, lab: np.ndarray, share: bool, wrap: bool) -> bool:
    """Members' and non-members' histograms of ``feature`` on shared bins (:func:`histogram_plan`): each side's
    share of its clips per bin (``share``) or its clip counts; the clips outside the range shown are counted in the
    panel's corner. False when no value is finite."""
    ok = np.isfinite(x)
    plan = histogram_plan(x[ok])
    if plan is None:
        return False
    factor, text = _display(feature, plan, x)
    for side, colour, name in ((1, MEMBER, "members"), (0, NONMEMBER, "non-members")):
        v = x[ok & (lab == side)]
        w = np.full(v.size, 100.0 / max(int((lab == side).sum()), 1)) if share else None
        ax.hist(v * factor, bins=plan.edges * factor, weights=w, color=colour, alpha=0.55, label=name,
                histtype="stepfilled", edgecolor=colour, gid=f"side:{name}")
    if plan.scale == "log":
        ax.set_xscale("log")
    elif plan.scale == "asinh":
        ax.set_xscale("asinh", linear_width=plan.linear_width * factor)
        ticks = _asinh_ticks(plan.lo * factor, plan.hi * factor, plan.linear_width * factor)
        ax.set_xticks(ticks, [_signed_decade(t) for t in ticks])
        ax.xaxis.set_minor_locator(NullLocator())
    else:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
        fmt = ScalarFormatter(useOffset=False)
        fmt.set_scientific(False)
        ax.xaxis.set_major_formatter(fmt)
    ax.set_xlim(plan.lo * factor, plan.hi * factor)
    ax.yaxis.set_major_locator(MaxNLocator(nbins=4))
    ax.set_xlabel(_label(feature, text, wrap), fontsize=8)
    if plan.outside:
        ax.set_title(f"{plan.outside} of {plan.total} clips outside", fontsize=7, color="0.35", loc="right")
    return True


def fig_top_features(d: ReportData, n: int = 6) -> Figure | None:
    """Member and non-member distributions of the features that separate the sides most: each side's share of its
    clips per bin, on bins shared by the sides over a robust range."""
    top = [t["feature"] for t in d.result.get("top_features") or [] if "feature" in t]
    if d.features is None or "label" not in d.features.columns:
        return None
    top = [f for f in top if f in d.features.columns][:n]
    if not top:
        return None
    cols = 3
    rows = math.ceil(len(top) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(9, 2.7 * rows), squeeze=False)
    lab = d.features["label"].to_numpy().astype(int)
    for i, (ax, feat) in enumerate(zip(axes.flat, top, strict=False)):
        if not _side_histograms(ax, feat, d.features[feat].to_numpy(float), lab, share=True, wrap=True):
            ax.set_visible(False)
            continue
        if i % cols == 0:
            ax.set_ylabel("% of the side's clips")
    for ax in list(axes.flat)[len(top):]:
        ax.set_visible(False)
    axes.flat[0].legend(frameon=False)
    fig.suptitle("top separating features: members vs non-members")
    fig.tight_layout()
    return fig


def fig_attribution(d: ReportData, n: int = 15) -> Figure | None:
    """Share of the best combined model's attribution (mean |SHAP|) by feature and by modality, in the
    modalities' colours (those of the models on each modality)."""
    attr = [a for a in d.result.get("attributions") or [] if a.get("share") is not None][:n]
    shares = d.result.get("modality_shares") or {}
    if not attr and not shares:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 0.28 * max(len(attr), 4) + 1.3),
                                   gridspec_kw={"width_ratios": [3, 1]})
    attr = attr[::-1]
    for i, a in enumerate(attr):
        mod = str(a.get("modality") or str(a.get("feature", "")).split(".", 1)[0])
        ax1.barh([i], [100 * a["share"]], color=modality_colour(mod), gid=f"modality:{mod}")
    ax1.set_yticks(range(len(attr)), [a["feature"] for a in attr], fontsize=7)
    ax1.set_xlabel("share of attribution (%)")
    ax1.set_title("by feature")
    mods = sorted(shares, key=lambda m: -shares[m])
    for i, m in enumerate(mods):
        ax2.bar([i], [100 * shares[m]], color=modality_colour(m), gid=f"modality:{m}")
    ax2.set_xticks(range(len(mods)), mods, rotation=45, ha="right")
    ax2.set_ylabel("share of attribution (%)")
    ax2.set_title("by modality")
    fig.tight_layout()
    return fig


def fig_attack_scatter(d: ReportData) -> Figure | None:
    """Each attack's score against the blind score, per clip, with Spearman's rho."""
    a = d.attack_scores
    if a is None or "label" not in a.columns:
        return None
    blind = next((c for c in ("blind_score", "blind") if c in a.columns), None)
    attacks = [c for c in a.columns if c not in ("id", "label", "group", blind) and not c.endswith("residual")][:3]
    if blind is None or not attacks:
        return None
    rho = {str(x.get("name")): x.get("spearman") for x in _attacks(d)}
    best, _ = _blind_style(d, {})
    fig, axes = plt.subplots(1, len(attacks), figsize=(3.3 * len(attacks), 3.2), squeeze=False)
    lab = a["label"].to_numpy().astype(int)
    for ax, c in zip(axes.flat, attacks, strict=True):
        name = c.split(".", 1)[-1]
        for side, colour, nm in ((1, MEMBER, "members"), (0, NONMEMBER, "non-members")):
            ax.scatter(a[blind][lab == side], a[c][lab == side], s=6, alpha=0.5, color=colour, label=nm,
                       gid=f"side:{nm}")
        r = rho.get(name, rho.get(c))
        r = r.get("value", r.get("rho")) if isinstance(r, dict) else r
        ax.set_title(f"{name}" + (f" (Spearman ρ = {r:.2f})" if isinstance(r, int | float) else ""), fontsize=9)
        ax.set_xlabel(f"blind score ({best + ', ' if best else ''}out-of-fold probability)")
        ax.set_ylabel("attack score")
    axes.flat[0].legend(frameon=False, markerscale=2)
    fig.tight_layout()
    return fig


def _attacks(d: ReportData) -> list[dict]:
    a = d.section("attacks")
    return [x for x in a if isinstance(x, dict)] if isinstance(a, list) else []


def fig_di(d: ReportData) -> Figure | None:
    """Dataset inference: rejection rate against the number of clips, for the attack and the blind scorer (the
    blind scorer in its model's style, the attack in its own)."""
    di = d.section("di")
    if not isinstance(di, dict):
        return None
    curves = di.get("curves") or di.get("rejection")
    if not isinstance(curves, dict):
        return None
    styles = _styles(d)
    best, blind_style = _blind_style(d, styles)
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    drawn = 0
    for name, pts in curves.items():
        try:
            n = [p["n"] for p in pts]
            r = [p["rate"] if "rate" in p else p["rejection_rate"] for p in pts]
        except (TypeError, KeyError):
            continue
        name = str(name)
        if name == "blind":
            gid, st, label = best or "blind", blind_style, f"blind ({best})" if best else "blind"
        elif name in styles:
            gid, st, label = name, styles[name], name
        else:
            gid, st, label = f"attack:{name}", styles[f"attack:{name}"], f"attack {name}"
        ax.plot(n, r, ls=st.linestyle, marker=st.marker, color=st.colour, label=label, ms=3, gid=gid)
        drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    alpha = di.get("alpha")
    if isinstance(alpha, int | float):
        ax.axhline(alpha, color="0.5", ls=":", lw=1, label=f"alpha = {alpha}")
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("clips per side (n, log scale)")
    ax.set_ylabel("rejection rate")
    ax.set_ylim(0, 1.02)
    ax.set_title("dataset inference: rejection rate vs n")
    ax.legend(frameon=False)
    return fig


def fig_love(d: ReportData) -> Figure | None:
    """Love plot: |standardised mean difference| of each feature before and after matching."""
    m = d.section("match")
    bal = m.get("balance") if isinstance(m, dict) else None
    if not isinstance(bal, list) or not bal:
        return None
    try:
        rows = sorted(((str(b["feature"]), abs(float(b["smd_before"])), abs(float(b["smd_after"]))) for b in bal),
                      key=lambda r: r[1])[-25:]
    except (TypeError, KeyError, ValueError):
        return None
    fig, ax = plt.subplots(figsize=(6, 0.25 * len(rows) + 1.2))
    y = np.arange(len(rows))
    # Greys, not the sides' colours: before and after are not members and non-members.
    ax.scatter([r[1] for r in rows], y, facecolors="white", edgecolors="0.45", marker="o", label="before matching",
               zorder=3)
    ax.scatter([r[2] for r in rows], y, color="0.05", marker="s", s=18, label="after matching", zorder=3)
    for yi, r in zip(y, rows, strict=True):
        ax.plot([r[1], r[2]], [yi, yi], color="0.75", lw=0.8)
    ax.axvline(0.1, color="0.5", ls="--", lw=1, label="|SMD| = 0.1")
    ax.set_yticks(y, [r[0] for r in rows], fontsize=7)
    ax.set_xlabel("|standardised mean difference| (pooled SD units)")
    ax.set_title("balance before and after matching")
    ax.legend(frameon=False, loc="lower right")
    return fig


def fig_overview(d: ReportData) -> Figure | None:
    """The data per side: durations, sample rates, levels, and clips per speaker/group."""
    f = d.features
    if f is None or "label" not in f.columns:
        return None
    lab = f["label"].to_numpy().astype(int)
    panels = [c for c in ("recording.duration_s", "recording.sample_rate", "recording.rms_dbfs",
                          "recording.loudness_lufs") if c in f.columns]
    groups, gname = None, (d.result.get("cv") or {}).get("group_by") or "speaker"
    if d.manifest is not None and {gname, "label"} <= set(d.manifest.columns):
        groups = d.manifest[[gname, "label"]].rename(columns={gname: "group"})
    elif d.scores is not None and "group" in d.scores.columns:
        groups = d.scores[["group", "label"]]
    n = len(panels) + (groups is not None)
    if n == 0:
        return None
    cols = min(n, 3)
    fig, axes = plt.subplots(math.ceil(n / cols), cols, figsize=(9, 2.8 * math.ceil(n / cols)), squeeze=False)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    for ax, col in zip(axes.flat, panels, strict=False):
        x = f[col].to_numpy(float)
        ok = np.isfinite(x)
        if col.endswith("sample_rate"):
            vals = sorted(set(np.round(x[ok] / 1000, 3)))
            w = 0.4
            for k, (side, colour, nm) in enumerate(((1, MEMBER, "members"), (0, NONMEMBER, "non-members"))):
                counts = [int(((np.round(x / 1000, 3) == v) & (lab == side)).sum()) for v in vals]
                ax.bar(np.arange(len(vals)) + (k - 0.5) * w, counts, w, color=colour, label=nm, gid=f"side:{nm}")
            ax.set_xticks(range(len(vals)), [f"{v:g}" for v in vals])
            ax.set_xlabel(_label(col, "kHz"), fontsize=8)
        elif not _side_histograms(ax, col, x, lab, share=False, wrap=False):
            ax.set_xlabel(col)
        ax.set_ylabel("clips")
    if groups is not None:
        ax = axes.flat[n - 1]
        per = groups.groupby(["group", "label"]).size().unstack(fill_value=0)
        per = per.loc[per.sum(axis=1).sort_values(ascending=False).index[:20]]
        x = np.arange(len(per))
        ax.bar(x, per.get(1, 0), color=MEMBER, label="members", gid="side:members")
        ax.bar(x, per.get(0, 0), bottom=per.get(1, 0), color=NONMEMBER, label="non-members", gid="side:non-members")
        ax.set_xticks(x, [str(g)[:12] for g in per.index], rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("clips")
        ax.set_xlabel(f"{gname} (clips per side)")
    axes.flat[0].legend(frameon=False)
    fig.suptitle("dataset overview by side")
    fig.tight_layout()
    return fig


FIGURES: dict[str, tuple[Callable[[ReportData], Figure | None], str]] = {
    "roc": (fig_roc, "ROC curves of the blind models with the chance line; right: log-scale FPR for the low-FPR "
                     "region."),
    "auc": (fig_auc, "Blind AUC per model and modality with confidence intervals."),
    "top_features": (fig_top_features, "Member and non-member distributions of the top separating features."),
    "attribution": (fig_attribution, "Attribution of the blind model by feature and by modality."),
    "attacks": (fig_attack_scatter, "Attack score against blind score per clip."),
    "di": (fig_di, "Dataset inference: rejection rate against n for the attack and the blind scorer."),
    "love": (fig_love, "Love plot: |SMD| of each feature before and after matching."),
    "overview": (fig_overview, "Dataset overview per side: durations, sample rates, levels, groups."),
}


def drawn_colours(fig: Figure) -> dict[str, str | list[str]]:
    """The colour of every series drawn in ``fig``, read back from its artists: for each artist tagged with a
    ``gid`` (a model's name, ``attack:<name>``, ``modality:<name>``, ``side:members`` or ``side:non-members``), its
    line, marker, face or edge colour as ``#rrggbb``; a list of the colours where the artists of one series
    disagree."""
    seen: dict[str, set[str]] = {}
    for art in fig.findobj(lambda a: bool(a.get_gid())):
        if isinstance(art, Line2D):  # what is visible of it: the line, the markers (a cap is a marker alone)
            cs = [art.get_color()] if art.get_linestyle() not in ("None", "none", "", " ") else []
            if art.get_marker() not in (None, "None", "none", "", " "):
                cs.append(art.get_markeredgecolor())
                if MarkerStyle(art.get_marker()).is_filled() and art.get_fillstyle() != "none":
                    cs.append(art.get_markerfacecolor())
        elif isinstance(art, LineCollection):
            cs = list(art.get_colors())
        elif isinstance(art, Collection):
            cs = list(art.get_facecolors()) or list(art.get_edgecolors())
        elif isinstance(art, Patch):
            cs = [art.get_facecolor()]
        else:
            continue
        seen.setdefault(str(art.get_gid()), set()).update(to_hex(c) for c in cs)
    return {k: next(iter(v)) if len(v) == 1 else sorted(v) for k, v in sorted(seen.items())}


def _png(fig: Figure) -> bytes:
    """The figure as PNG at :data:`DPI` (with that resolution recorded in the file), stored with a palette of
    :data:`_PNG_COLOURS` colours."""
    from PIL import Image

    raw = io.BytesIO()
    fig.savefig(raw, format="png", dpi=DPI)
    img = Image.open(raw)
    img.load()
    rgb = img.convert("RGB")  # the figures are opaque (white face)
    pal = rgb.quantize(colors=_PNG_COLOURS, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    # The octree's entries are its clusters' means: the page's white and the text's black come out as #fefefe and
    # #010101. Entries within 6 levels of white or black are set to it (a change no eye sees, a file that matches
    # the page it sits on).
    entries = np.array(pal.getpalette(), dtype=np.int16).reshape(-1, 3)
    entries[(entries >= 249).all(axis=1)] = 255
    entries[(entries <= 6).all(axis=1)] = 0
    pal.putpalette(entries.astype(np.uint8).ravel().tolist())
    out = io.BytesIO()
    pal.save(out, format="png", dpi=(DPI, DPI))
    return out.getvalue()


def render_figures(d: ReportData, folder: Path | None, formats: tuple[str, ...] = ("png", "pdf")
                   ) -> list[dict]:
    """Draw every figure the data allow. Returns, per figure, its name, caption, PNG bytes (at ``dpi``), saved
    paths and ``colours``: the colour of each model, attack and modality as drawn (:func:`drawn_colours`)."""
    out = []
    with plt.rc_context(_STYLE):
        for name, (fn, caption) in FIGURES.items():
            fig = fn(d)
            if fig is None:
                continue
            try:
                png = _png(fig)
                paths = {}
                if folder is not None:
                    folder.mkdir(parents=True, exist_ok=True)
                    for fmt in formats:
                        paths[fmt] = folder / f"{name}.{fmt}"
                        if fmt == "png":
                            paths[fmt].write_bytes(png)
                        else:
                            fig.savefig(paths[fmt], format=fmt)
                out.append({"name": name, "caption": caption, "png": png, "dpi": DPI, "paths": paths,
                            "colours": drawn_colours(fig)})
            finally:
                plt.close(fig)
    return out
