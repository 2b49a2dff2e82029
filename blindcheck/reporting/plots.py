"""The report's figures (matplotlib, Agg backend, Okabe–Ito colour-blind-safe palette).

Each ``fig_*`` function takes a :class:`~blindcheck.reporting.data.ReportData` and returns a figure, or None when
the data it draws are absent; :func:`render_figures` saves every figure as PNG and PDF under ``figures/``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from blindcheck.reporting.data import ReportData  # noqa: E402

# Okabe & Ito (2008): distinguishable under the common colour-vision deficiencies.
# Yellow (#F0E442) is left out: too faint for thin lines on white.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#000000"]
_DASHES = ["-", "--", "-."]
MEMBER, NONMEMBER = "#D55E00", "#0072B2"
MODALITY = {"recording": "#E69F00", "spectral": "#0072B2", "prosodic": "#009E73", "text": "#CC79A7",
            "voice": "#56B4E9", "music": "#D55E00", "all": "#000000"}
_STYLE = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8, "figure.dpi": 110,
          "axes.spines.top": False, "axes.spines.right": False, "savefig.bbox": "tight"}


def _colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _dash(i: int) -> str:
    return _DASHES[(i // len(PALETTE)) % len(_DASHES)]


def _roc(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.metrics import roc_curve

    ok = np.isfinite(scores)
    fpr, tpr, _ = roc_curve(labels[ok], scores[ok])
    return fpr, tpr


def fig_roc(d: ReportData) -> Figure | None:
    """ROC of every blind model (and attack), linear and with a log FPR axis for the low-FPR region."""
    if d.scores is None:
        return None
    curves = []
    labels = d.scores["label"].to_numpy().astype(int)
    aucs = {m.get("name"): m.get("auc") for m in d.result.get("models") or []}
    for c in d.scores.columns:
        if c.startswith("score."):
            name = c[len("score."):]
            curves.append((f"{name} (AUC {aucs[name]:.2f})" if aucs.get(name) is not None else name,
                           *_roc(labels, d.scores[c].to_numpy(float)), None))
    a = d.attack_scores
    if a is not None and "label" in a.columns:
        for c in a.columns:
            if c.startswith("attack.") or c.startswith("mia_"):
                name = c.split(".", 1)[-1]
                curves.append((f"attack {name}", *_roc(a["label"].to_numpy().astype(int), a[c].to_numpy(float)),
                               ":"))
    if not curves:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.8 + 0.18 * math.ceil(len(curves) / 3)))
    floor = max(1e-3, 1 / max(int((labels == 0).sum()), 1))
    for i, (name, fpr, tpr, ls) in enumerate(curves):
        ax1.plot(fpr, tpr, ls or _dash(i), color=_colour(i), lw=1.4, label=name)
        ax2.plot(np.maximum(fpr, floor / 2), tpr, ls or _dash(i), color=_colour(i), lw=1.4)
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
    fig.legend(loc="lower center", ncol=3, frameon=False, bbox_to_anchor=(0.5, 0))
    fig.tight_layout(rect=(0, 0.06 * math.ceil((len(curves) + 1) / 3), 1, 1))
    return fig


def fig_auc(d: ReportData) -> Figure | None:
    """Blind AUC of each model (one per modality and the combined ones) with its confidence interval."""
    models = [m for m in d.result.get("models") or [] if m.get("auc") is not None]
    if not models:
        return None
    models = sorted(models, key=lambda m: m["auc"])
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(models) + 1.2))
    y = np.arange(len(models))
    auc = np.array([m["auc"] for m in models])
    lo = np.array([m.get("ci_low") if m.get("ci_low") is not None else m["auc"] for m in models])
    hi = np.array([m.get("ci_high") if m.get("ci_high") is not None else m["auc"] for m in models])
    cols = [MODALITY.get(m.get("modality"), "#000000") for m in models]
    ax.errorbar(auc, y, xerr=[auc - lo, hi - auc], fmt="none", ecolor="0.3", capsize=3, lw=1)
    ax.scatter(auc, y, c=cols, zorder=3, s=30)
    ax.axvline(0.5, color="0.5", ls=":", lw=1, label="chance (0.5)")
    tol = (d.result.get("settings") or {}).get("tolerated_auc")
    if tol is not None:
        ax.axvline(tol, color="#D55E00", ls="--", lw=1, label=f"tolerated AUC ({tol:.2f})")
    ax.set_yticks(y, [m["name"] for m in models])
    alpha = (d.result.get("settings") or {}).get("alpha", 0.05)
    ax.set_xlabel(f"blind AUC (out-of-fold) with {100 * (1 - alpha):.0f}% CI")
    ax.set_xlim(min(0.3, lo.min() - 0.02), 1.02)
    ax.set_title("blind AUC per model and modality")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12 - 0.5 / len(models)), ncol=2, frameon=False)
    return fig


def _unit_label(feature: str) -> tuple[str, float]:
    """Axis label with its unit, and the factor that converts stored values to it."""
    from blindcheck.analysis.verdict import fmt_value

    name = feature.rsplit(".", 1)[-1]
    probe = fmt_value(feature, 1234.5)
    for unit, scale in (("kHz", 1e-3), ("dBFS", 1), ("LUFS", 1), ("dB", 1), ("%", 100)):
        if probe.endswith(" " + unit) or (unit == "%" and probe.endswith("%")):
            return f"{feature} ({unit})", scale
    if name.endswith("_s"):
        return f"{feature} (s)", 1.0
    if name.endswith("_hz"):
        return f"{feature} (Hz)", 1.0
    return f"{feature} (value)", 1.0


def fig_top_features(d: ReportData, n: int = 6) -> Figure | None:
    """Member and non-member distributions of the features that separate the sides most."""
    top = [t["feature"] for t in d.result.get("top_features") or [] if "feature" in t]
    if d.features is None or "label" not in d.features.columns:
        return None
    top = [f for f in top if f in d.features.columns][:n]
    if not top:
        return None
    cols = 3
    rows = math.ceil(len(top) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(9, 2.5 * rows), squeeze=False)
    lab = d.features["label"].to_numpy().astype(int)
    for ax, feat in zip(axes.flat, top, strict=False):
        label, scale = _unit_label(feat)
        x = d.features[feat].to_numpy(float) * scale
        ok = np.isfinite(x)
        if ok.sum() == 0:
            ax.set_visible(False)
            continue
        bins = np.histogram_bin_edges(x[ok], bins=25)
        for side, colour, name in ((1, MEMBER, "members"), (0, NONMEMBER, "non-members")):
            ax.hist(x[ok & (lab == side)], bins=bins, color=colour, alpha=0.55, label=name, density=True,
                    histtype="stepfilled", edgecolor=colour)
        ax.set_xlabel(label, fontsize=8)
        ax.set_ylabel("density")
    for ax in list(axes.flat)[len(top):]:
        ax.set_visible(False)
    axes.flat[0].legend(frameon=False)
    fig.suptitle("top separating features: members vs non-members")
    fig.tight_layout()
    return fig


def fig_attribution(d: ReportData, n: int = 15) -> Figure | None:
    """Share of the best combined model's attribution (mean |SHAP|) by feature and by modality."""
    attr = [a for a in d.result.get("attributions") or [] if a.get("share") is not None][:n]
    shares = d.result.get("modality_shares") or {}
    if not attr and not shares:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 0.28 * max(len(attr), 4) + 1.3),
                                   gridspec_kw={"width_ratios": [3, 1]})
    attr = attr[::-1]
    ax1.barh(range(len(attr)), [100 * a["share"] for a in attr],
             color=[MODALITY.get(a.get("modality"), "#999999") for a in attr])
    ax1.set_yticks(range(len(attr)), [a["feature"] for a in attr], fontsize=7)
    ax1.set_xlabel("share of attribution (%)")
    ax1.set_title("by feature")
    mods = sorted(shares, key=lambda m: -shares[m])
    ax2.bar(range(len(mods)), [100 * shares[m] for m in mods], color=[MODALITY.get(m, "#999999") for m in mods])
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
    fig, axes = plt.subplots(1, len(attacks), figsize=(3.3 * len(attacks), 3.2), squeeze=False)
    lab = a["label"].to_numpy().astype(int)
    for ax, c in zip(axes.flat, attacks, strict=True):
        name = c.split(".", 1)[-1]
        for side, colour, nm in ((1, MEMBER, "members"), (0, NONMEMBER, "non-members")):
            ax.scatter(a[blind][lab == side], a[c][lab == side], s=6, alpha=0.5, color=colour, label=nm)
        r = rho.get(name, rho.get(c))
        r = r.get("value", r.get("rho")) if isinstance(r, dict) else r
        ax.set_title(f"{name}" + (f" (Spearman ρ = {r:.2f})" if isinstance(r, int | float) else ""), fontsize=9)
        ax.set_xlabel("blind score (out-of-fold probability)")
        ax.set_ylabel("attack score")
    axes.flat[0].legend(frameon=False, markerscale=2)
    fig.tight_layout()
    return fig


def _attacks(d: ReportData) -> list[dict]:
    a = d.section("attacks")
    return [x for x in a if isinstance(x, dict)] if isinstance(a, list) else []


def fig_di(d: ReportData) -> Figure | None:
    """Dataset inference: rejection rate against the number of clips, for the attack and the blind scorer."""
    di = d.section("di")
    if not isinstance(di, dict):
        return None
    curves = di.get("curves") or di.get("rejection")
    if not isinstance(curves, dict):
        return None
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    drawn = 0
    for i, (name, pts) in enumerate(curves.items()):
        try:
            n = [p["n"] for p in pts]
            r = [p["rate"] if "rate" in p else p["rejection_rate"] for p in pts]
        except (TypeError, KeyError):
            continue
        ax.plot(n, r, "o-", color=_colour(i), label=str(name), ms=3)
        drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    alpha = di.get("alpha")
    if isinstance(alpha, int | float):
        ax.axhline(alpha, color="0.5", ls=":", lw=1, label=f"alpha = {alpha}")
    ax.set_xscale("log")
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
    ax.scatter([r[1] for r in rows], y, color=MEMBER, marker="o", label="before matching", zorder=3)
    ax.scatter([r[2] for r in rows], y, color=NONMEMBER, marker="s", label="after matching", zorder=3)
    for yi, r in zip(y, rows, strict=True):
        ax.plot([r[1], r[2]], [yi, yi], color="0.7", lw=0.8)
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
    panels = []
    for col, label, scale in (("recording.duration_s", "duration (s)", 1.0),
                              ("recording.sample_rate", "sample rate (kHz)", 1e-3),
                              ("recording.rms_dbfs", "RMS level (dBFS)", 1.0),
                              ("recording.loudness_lufs", "loudness (LUFS)", 1.0)):
        if col in f.columns:
            panels.append((col, label, scale))
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
    for ax, (col, label, scale) in zip(axes.flat, panels, strict=False):
        x = f[col].to_numpy(float) * scale
        ok = np.isfinite(x)
        if col.endswith("sample_rate"):
            vals = sorted(set(np.round(x[ok], 3)))
            w = 0.4
            for k, (side, colour, nm) in enumerate(((1, MEMBER, "members"), (0, NONMEMBER, "non-members"))):
                counts = [int(((np.round(x, 3) == v) & (lab == side)).sum()) for v in vals]
                ax.bar(np.arange(len(vals)) + (k - 0.5) * w, counts, w, color=colour, label=nm)
            ax.set_xticks(range(len(vals)), [f"{v:g}" for v in vals])
            ax.set_ylabel("clips")
        else:
            bins = np.histogram_bin_edges(x[ok], bins=20) if ok.any() else 10
            for side, colour, nm in ((1, MEMBER, "members"), (0, NONMEMBER, "non-members")):
                ax.hist(x[ok & (lab == side)], bins=bins, color=colour, alpha=0.55, label=nm, histtype="stepfilled")
            ax.set_ylabel("clips")
        ax.set_xlabel(label)
    if groups is not None:
        ax = axes.flat[n - 1]
        per = groups.groupby(["group", "label"]).size().unstack(fill_value=0)
        per = per.loc[per.sum(axis=1).sort_values(ascending=False).index[:20]]
        x = np.arange(len(per))
        ax.bar(x, per.get(1, 0), color=MEMBER, label="members")
        ax.bar(x, per.get(0, 0), bottom=per.get(1, 0), color=NONMEMBER, label="non-members")
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


def render_figures(d: ReportData, folder: Path | None, formats: tuple[str, ...] = ("png", "pdf")
                   ) -> list[dict]:
    """Draw every figure the data allow. Returns, per figure, its name, caption, PNG bytes and saved paths."""
    out = []
    with plt.rc_context(_STYLE):
        for name, (fn, caption) in FIGURES.items():
            fig = fn(d)
            if fig is None:
                continue
            try:
                buf = io.BytesIO()
                fig.savefig(buf, format="png", dpi=110)
                paths = {}
                if folder is not None:
                    folder.mkdir(parents=True, exist_ok=True)
                    for fmt in formats:
                        paths[fmt] = folder / f"{name}.{fmt}"
                        if fmt == "png":
                            paths[fmt].write_bytes(buf.getvalue())
                        else:
                            fig.savefig(paths[fmt], format=fmt)
                out.append({"name": name, "caption": caption, "png": buf.getvalue(), "paths": paths})
            finally:
                plt.close(fig)
    return out
