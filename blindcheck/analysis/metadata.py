"""The manifest's own metadata as evidence: is any attribute of the clips (gender, age, accent, source dataset,
genre, duration, ...) associated with membership?

Every manifest column that is not the id, path, label, a text source, the speaker (which has its own section,
:mod:`blindcheck.analysis.speakers`) or an attack score is tested, one test per column, and the family pays for the
k columns by Holm's step-down. Metadata never feeds the blind classifiers (they see only what the audio holds): it
explains them, and a column that alone separates the sides beyond the tolerated AUC makes the split confounded
(criterion ``metadata``), because membership can then be read off an attribute the recordings carry.

- **categorical** columns (text, booleans, numbers with fewer than :data:`NUMERIC_MIN_LEVELS` distinct values;
  a missing value is a level of its own, "(missing)"): Pearson's chi-square of the 2 x L table, its p-value from
  ``permutations`` relabellings (exact in distribution for a random split, whatever the counts), Cramér's V with a
  percentile interval from a stratified parametric bootstrap of each side's level counts, and the AUC of the
  column as a classifier: each clip scored by the member share of its level among the clips of the other folds
  (:func:`category_separability`; pairs of one level count as ties). Its one-sided lower bound at level
  1 - alpha/k, with a standard error at least the spread of that AUC over relabellings, is what is compared with
  the tolerated AUC.
- **numeric** columns: the AUC of the value itself, in either direction (|AUC - 0.5|), DeLong's standard error
  (cluster-robust with ``groups``) floored by the spread over relabellings, a two-sided permutation p-value, and
  the lower bound of max(AUC, 1 - AUC) at 1 - alpha/k.

With ``groups`` (the check's ``group_by``) the relabellings move whole groups as the blind check's do
(:func:`blindcheck.analysis.permutation.relabel`); without, clips are exchanged, which is exact for a split drawn
at random over clips. A speaker-level attribute on a speaker-disjoint split is then judged per clip: run with
``--group-by speaker`` to count speakers.

Skipped, with the reason: constant columns, and categorical columns with a level per clip or nearly (more levels
than half the clips, at least 20 clips: an identifier, not an attribute).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from blindcheck.analysis import stats
from blindcheck.analysis.permutation import group_layout, relabel
from blindcheck.errors import BlindcheckError
from blindcheck.inputs.vocabulary import CAPTION_COLUMNS, ID_COLUMNS, PATH_COLUMNS, SPEAKER_COLUMNS, TEXT_COLUMNS

NUMERIC_MIN_LEVELS = 10  # a numeric column with fewer distinct values is tested as categories
MISSING = "(missing)"
# Columns that are roles, not attributes: the canonical ones, their usual raw names, text sources (captions,
# prompts, lyrics, ...) and segment bounds.
_ROLE_COLUMNS = frozenset({"id", "path", "label", "__label__", "text", "speaker", "start", "end", "transcript",
                           *CAPTION_COLUMNS, *ID_COLUMNS, *PATH_COLUMNS, *TEXT_COLUMNS, *SPEAKER_COLUMNS})
_TEXT_SOURCE = re.compile(r"^(" + "|".join(map(re.escape, CAPTION_COLUMNS)) + r")_?\d+$")


def attribute_columns(table: pd.DataFrame, exclude: tuple[str, ...] | list[str] = ()) -> list[str]:
    """The columns of a manifest ``table`` that describe the clips: not a role (id, path, label, text sources,
    speaker, segment bounds), not an attack score (``mia_*``), not in ``exclude``."""
    out = []
    for c in table.columns:
        name = str(c)
        if name.lower() in _ROLE_COLUMNS or name.startswith("mia_") or name in exclude:
            continue
        if _TEXT_SOURCE.match(name.lower()) or name.startswith("text."):
            continue
        out.append(name)
    return out


@dataclass
class MetadataReport:
    """Every tested column (``columns``: one dict each, see :func:`metadata_evidence`), the skipped ones with their
    reason, and the family's settings."""

    columns: list[dict]
    skipped: list[dict]
    alpha: float
    tolerated_auc: float
    permutations: int
    grouped: bool
    notes: list[str] = field(default_factory=list)

    @property
    def decisive(self) -> list[dict]:
        """Columns that alone separate the sides beyond the tolerated AUC (Holm p <= alpha, lower bound above)."""
        return [c for c in self.columns if c["decisive"]]

    @property
    def significant(self) -> list[dict]:
        """Columns associated with membership (Holm p <= alpha), decisive or not."""
        return [c for c in self.columns if c["p_holm"] <= self.alpha]

    def at_alpha(self, alpha: float) -> MetadataReport:
        """The same evidence decided at another alpha (the metadata criterion's share of it, see
        :func:`blindcheck.analysis.verdict.criterion_alphas`): Holm at ``alpha``, lower bounds at 1 - alpha/k."""
        if alpha == self.alpha:
            return self
        cols = [_decide(dict(d), alpha, len(self.columns), self.tolerated_auc) for d in self.columns]
        return dataclasses.replace(self, columns=cols, alpha=alpha)

    def to_dict(self) -> dict:
        return {"columns": self.columns, "skipped": self.skipped, "alpha": self.alpha,
                "tolerated_auc": self.tolerated_auc, "permutations": self.permutations, "grouped": self.grouped,
                "family": f"Holm over {len(self.columns)} column{'s' if len(self.columns) != 1 else ''}",
                "decisive": [c["column"] for c in self.decisive], "notes": self.notes}


def auc_within_ties(y: np.ndarray, s: np.ndarray, groups: np.ndarray) -> tuple[float, float]:
    """AUC of scores ``s`` (in [0, 1]) with every (member, non-member) pair of one group (integer codes) counted
    as a tie, and its DeLong standard error (structural components of that kernel), in O(n log n)."""
    y = np.asarray(y).astype(bool)
    s, groups = np.asarray(s, dtype=float), np.asarray(groups).astype(float)
    pos, neg = np.nonzero(y)[0], np.nonzero(~y)[0]
    n1, n0 = len(pos), len(neg)
    if n1 < 2 or n0 < 2:
        return math.nan, math.nan

    def wins(a: np.ndarray, b_sorted: np.ndarray) -> np.ndarray:  # per a: #b below + 0.5 #b equal
        lo = np.searchsorted(b_sorted, a, "left")
        hi = np.searchsorted(b_sorted, a, "right")
        return lo + 0.5 * (hi - lo)

    def within(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # same-group b per a: wins, count
        comp = np.sort(groups[b] * 4.0 + s[b])  # scores lie in [0, 1]: one band of width 4 per group
        va, base = groups[a] * 4.0 + s[a], groups[a] * 4.0
        start = np.searchsorted(comp, base - 0.5, "left")
        lo, hi = np.searchsorted(comp, va, "left"), np.searchsorted(comp, va, "right")
        return (lo - start) + 0.5 * (hi - lo), np.searchsorted(comp, base + 2.0, "right") - start

    v10 = wins(s[pos], np.sort(s[neg]))  # members: wins over every non-member
    v01 = n1 - wins(s[neg], np.sort(s[pos]))  # non-members: members scored above them (ties half)
    w, c = within(pos, neg)  # replace the within-group pairs' outcome by a tie
    v10 += 0.5 * c - w
    w, c = within(neg, pos)
    v01 += 0.5 * c - (c - w)
    v10, v01 = v10 / n0, v01 / n1
    a = float(v10.mean())
    return a, float(math.sqrt(max(v10.var(ddof=1) / n1 + v01.var(ddof=1) / n0, 0.0)))


def cross_fitted_share(codes: np.ndarray, y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Each clip's score: the member share of its level (integer ``codes``) among the clips of the other folds
    (stratified k-fold over clips); a level unseen in training gets the training share of members."""
    from sklearn.model_selection import StratifiedKFold

    scores = np.zeros(len(y))
    k_levels = int(codes.max()) + 1
    for train, test in StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(codes, y):
        n = np.bincount(codes[train], minlength=k_levels)
        m = np.bincount(codes[train], weights=y[train], minlength=k_levels)
        share = np.where(n > 0, m / np.maximum(n, 1), y[train].mean())
        scores[test] = share[codes[test]]
    return scores


def category_separability(codes: np.ndarray, y: np.ndarray, folds: int, seed: int,
                          relabellings: np.ndarray) -> tuple[float, float, float, int] | None:
    """How well a categorical attribute alone tells the sides apart: the AUC of :func:`cross_fitted_share` with
    pairs of one level as ties (two clips of one level differ only by which fold held them, and that difference
    anti-learns: a member in the test fold lowers its level's training share), its standard error (DeLong, at
    least the spread of the AUC over ``relabellings``, (R, n) bool: clips of one level share one score, so
    clip-level errors run small), and the one-sided permutation p of AUC > observed. Returns (auc, se, p, folds),
    or None where fewer than 2 folds fit."""
    y = np.asarray(y).astype(int)
    k = min(folds, int(np.bincount(y, minlength=2).min()))
    if k < 2:
        return None
    a, se = auc_within_ties(y, cross_fitted_share(codes, y, k, seed), codes)
    null = np.array([auc_within_ties(yp, cross_fitted_share(codes, yp, k, seed), codes)[0]
                     for yp in relabellings.astype(int)])
    p = float((1 + np.sum(null >= a - 1e-12)) / (len(null) + 1))
    spread = float(np.nanstd(null, ddof=1)) if len(null) > 1 else math.nan
    se = max(se, spread) if math.isfinite(se) else spread
    return float(a), float(se), p, k


def holm(p: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error over the list)."""
    order = np.argsort(p, kind="stable")
    k = len(p)
    adj = np.empty(k)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (k - rank) * p[i]))
        adj[i] = running
    return [float(x) for x in adj]


def _as_categories(x: pd.Series) -> np.ndarray:
    vals = x.astype(object).where(x.notna(), MISSING)
    return np.array([v if isinstance(v, str) else str(v) for v in vals], dtype=object)


def _kind(x: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(x) or not pd.api.types.is_numeric_dtype(x):
        return "categorical"
    return "numeric" if x.dropna().nunique() >= NUMERIC_MIN_LEVELS else "categorical"


def _chi2(counts1: np.ndarray, counts0: np.ndarray) -> np.ndarray:
    """Pearson's chi-square of 2 x L tables given as member and non-member counts per level, (..., L)."""
    n1 = counts1.sum(axis=-1, keepdims=True)
    n0 = counts0.sum(axis=-1, keepdims=True)
    tot = counts1 + counts0
    n = n1 + n0
    e1, e0 = tot * n1 / n, tot * n0 / n
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(e1 > 0, (counts1 - e1) ** 2 / e1, 0.0) + np.where(e0 > 0, (counts0 - e0) ** 2 / e0, 0.0)
    return t.sum(axis=-1)


def _categorical(name: str, x: pd.Series, y: np.ndarray, Y: np.ndarray, rng: np.random.Generator, folds: int,
                 seed: int, cv_relabellings: int, bootstrap: int, level: float) -> dict:
    cats = _as_categories(x)
    levels, codes = np.unique(cats, return_inverse=True)
    L = len(levels)
    n1, n0 = int(y.sum()), int((1 - y).sum())
    c1 = np.bincount(codes[y == 1], minlength=L).astype(float)
    c0 = np.bincount(codes[y == 0], minlength=L).astype(float)
    chi = float(_chi2(c1, c0))
    # member counts per level under each relabelling, one row at a time: memory O(levels), not clips x levels
    sizes = c1 + c0
    null_chi = np.empty(len(Y))
    for r, yr in enumerate(Y):
        m1 = np.bincount(codes[yr], minlength=L).astype(float)
        null_chi[r] = _chi2(m1, sizes - m1)
    p = float((1 + np.sum(null_chi >= chi - 1e-9)) / (len(Y) + 1))
    n = n1 + n0
    v = math.sqrt(chi / n) if n else math.nan  # Cramér's V of a 2 x L table (min(r, c) - 1 = 1)
    b1 = rng.multinomial(n1, c1 / n1, size=bootstrap).astype(float)
    b0 = rng.multinomial(n0, c0 / n0, size=bootstrap).astype(float)
    vb = np.sqrt(_chi2(b1, b0) / n)
    v_lo, v_hi = (float(q) for q in np.quantile(vb, [0.5 - level / 2, 0.5 + level / 2]))
    sep = category_separability(codes, y, folds, seed, Y[:cv_relabellings])
    share1, share0 = c1 / max(n1, 1), c0 / max(n0, 1)
    j = int(np.argmax(np.abs(share1 - share0)))
    top = [{"level": str(levels[i]), "members": int(c1[i]), "nonmembers": int(c0[i]),
            "member_share": float(share1[i]), "nonmember_share": float(share0[i])}
           for i in np.argsort(-(c1 + c0), kind="stable")[:10]]
    out = {"column": name, "kind": "categorical", "n": n, "levels": L, "top_levels": top,
           "statistic": "chi-square", "chi2": chi, "p": p, "cramers_v": v, "cramers_v_ci_low": v_lo,
           "cramers_v_ci_high": v_hi, "most_different_level": str(levels[j]),
           "most_different_member_share": float(share1[j]), "most_different_nonmember_share": float(share0[j])}
    if sep is None:
        out.update(auc=math.nan, se=math.nan, auc_folds=None)
    else:
        out.update(auc=sep[0], se=sep[1], auc_folds=sep[3])
    return out


def _numeric(name: str, x: pd.Series, y: np.ndarray, Y: np.ndarray, groups: np.ndarray | None) -> dict:
    v = pd.to_numeric(x, errors="coerce").to_numpy(dtype=float)
    ok = np.isfinite(v)
    vv, yy = v[ok], y[ok]
    out = {"column": name, "kind": "numeric", "n": int(ok.sum()), "missing": int((~ok).sum()),
           "statistic": "|AUC - 0.5|", "member_median": float(np.median(vv[yy == 1])) if (yy == 1).any() else math.nan,
           "nonmember_median": float(np.median(vv[yy == 0])) if (yy == 0).any() else math.nan}
    if int(yy.sum()) < 2 or int((1 - yy).sum()) < 2:
        return {**out, "auc": math.nan, "se": math.nan, "p": 1.0}
    from scipy.stats import rankdata

    r = rankdata(vv)
    n1, n0 = int(yy.sum()), int((1 - yy).sum())
    a = float((r[yy == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))
    Yk = Y[:, ok].astype(float)
    m1 = Yk.sum(axis=1)  # relabellings keep the side sizes of all clips, not of the scored ones: per row
    with np.errstate(divide="ignore", invalid="ignore"):
        null = (Yk @ r - m1 * (m1 + 1) / 2) / (m1 * (len(yy) - m1))
    p = float((1 + np.sum(np.abs(null - 0.5) >= abs(a - 0.5) - 1e-12)) / (len(Y) + 1))
    se = stats.auc_ci(yy, vv, 0.95, groups=None if groups is None else groups[ok])[3]
    spread = float(np.nanstd(null, ddof=1))
    se = max(se, spread) if math.isfinite(se) else spread
    return {**out, "auc": a, "se": float(se), "p": p}


def metadata_evidence(table: pd.DataFrame, labels: np.ndarray, alpha: float, tolerated_auc: float, *,
                      columns: list[str] | None = None, groups: np.ndarray | None = None, permutations: int = 1999,
                      cv_relabellings: int = 199, bootstrap: int = 1000, folds: int = 5, seed: int = 0
                      ) -> MetadataReport | None:
    """Test every attribute column of ``table`` (rows aligned with ``labels``, 1 = member) for association with
    membership (see the module docstring). ``columns``: the columns to test (default :func:`attribute_columns`).
    Returns None when there is no column to test. Pure and seeded: one set of ``permutations`` relabellings (grouped
    with ``groups``) serves every column, so the columns' tests see the same null draws."""
    cols = attribute_columns(table) if columns is None else list(columns)
    y = np.asarray(labels).astype(int)
    skipped, todo = [], []
    for c in cols:
        x = table[c].reset_index(drop=True)
        kind = _kind(x)
        if kind == "numeric":
            todo.append((c, x, kind))  # at least NUMERIC_MIN_LEVELS distinct values: never constant
            continue
        n_levels = len(set(_as_categories(x)))
        if n_levels <= 1:
            skipped.append({"column": c, "reason": "constant"})
        elif len(x) >= 20 and n_levels > len(x) / 2:
            skipped.append({"column": c, "reason": f"{n_levels} distinct values over {len(x)} clips: an identifier, "
                                                   "not an attribute"})
        else:
            todo.append((c, x, kind))
    if not todo and not skipped:
        return None
    rng = np.random.default_rng(seed + 313)
    layout = group_layout(y, groups) if groups is not None else None
    Y = relabel(y, layout, max(permutations, cv_relabellings), rng)
    level = 1 - alpha
    out = []
    for c, x, kind in todo:
        if kind == "categorical":
            out.append(_categorical(c, x, y, Y[:permutations], rng, folds, seed, cv_relabellings, bootstrap, level))
        else:
            out.append(_numeric(c, x, y, Y[:permutations], groups))
    for d, ph in zip(out, holm([d["p"] for d in out]), strict=True):
        d.update(p_holm=ph, effect_auc=d["auc"] if d["kind"] == "categorical" else max(d["auc"], 1 - d["auc"]))
        _decide(d, alpha, len(out), tolerated_auc)
        d["summary"] = describe(d)
    return MetadataReport(columns=out, skipped=skipped, alpha=alpha, tolerated_auc=tolerated_auc,
                          permutations=permutations, grouped=groups is not None)


def _decide(d: dict, alpha: float, k: int, tolerated_auc: float) -> dict:
    """A column's lower bound at 1 - alpha/k (of ``effect_auc`` with ``se``) and whether it is decisive (Holm p at
    most alpha and that bound above the tolerated AUC), set on ``d`` and returned."""
    effect, se = d["effect_auc"], d["se"]
    lower = effect - stats.quantile(1 - alpha / max(k, 1)) * se if math.isfinite(se) and math.isfinite(effect) \
        else math.nan
    d.update(lower_bound=lower, decisive=bool(d["p_holm"] <= alpha and math.isfinite(lower) and lower > tolerated_auc))
    return d


CONTENT_TYPE = "content_type"  # the derived column: each clip's dominant content (speech, music, other, silence)


def with_content_type(meta: pd.DataFrame, features: pd.DataFrame) -> pd.DataFrame:
    """``meta`` (rows aligned with ``features``) with the column ``content_type`` derived from the feature table's
    ``content.*`` shares (:func:`blindcheck.features.content.content_type`), so that a split whose sides hold
    different kinds of audio (members 95% speech, non-members 60%) is tested like any attribute. Unchanged without
    content shares or where the manifest already has such a column."""
    from blindcheck.features.content import content_type

    cols = [c for c in features.columns if str(c).startswith("content.")]
    if not cols or CONTENT_TYPE in meta.columns:
        return meta
    shares = features[cols].to_dict("records")
    types = [content_type(r) for r in shares]
    if all(t == "unknown" for t in types):
        return meta
    return meta.assign(**{CONTENT_TYPE: types})


def manifest_evidence(meta: pd.DataFrame, features: pd.DataFrame, labels: np.ndarray, settings,
                      groups: np.ndarray | None = None) -> MetadataReport | None:
    """:func:`metadata_evidence` of a manifest's rows (``meta``, aligned with ``features``, the feature table's rows
    of the same clips, and with ``labels``) under ``settings`` (a :class:`blindcheck.settings.Settings`: alpha,
    tolerated AUC, permutations, folds, seed). Tested: the attribute columns (:func:`attribute_columns`) and the
    clips' content type (:func:`with_content_type`); left out: ``settings.metadata_ignore`` (each must exist) and
    the columns the text modality read as text sources (the table's ``text:<source>`` columns; a column named with
    ``--text-column`` is text, not an attribute). None without any column to test. What check and match's fresh
    check run."""
    from blindcheck.inputs.manifest import source_name

    meta = with_content_type(meta.reset_index(drop=True), features.reset_index(drop=True))
    read_as_text = {str(c)[len("text:"):] for c in features.columns if str(c).startswith("text:")}
    text_columns = [c for c in meta.columns if source_name(str(c)) in read_as_text]
    unknown = [c for c in settings.metadata_ignore if c not in meta.columns]
    if unknown:
        raise BlindcheckError(f"ignore-column '{unknown[0]}': the manifest has no such column "
                              f"(columns: {', '.join(map(str, meta.columns))})")
    cols = attribute_columns(meta, exclude=(*settings.metadata_ignore, *text_columns))
    if not cols:
        return None
    return metadata_evidence(meta[cols].reset_index(drop=True), labels, settings.alpha, settings.tolerated_auc,
                             groups=groups, permutations=settings.metadata_permutations, folds=settings.folds,
                             seed=settings.seed)


def describe(d: dict) -> str:
    """One column's difference between the sides in words: "gender: members 71% female, non-members 38%"."""
    if d["kind"] == "categorical":
        return (f"{d['column']}: members {100 * d['most_different_member_share']:.0f}% {d['most_different_level']}, "
                f"non-members {100 * d['most_different_nonmember_share']:.0f}%")
    return f"{d['column']}: median {d['member_median']:.4g} for members, {d['nonmember_median']:.4g} for non-members"


def metadata_line(d: dict, alpha: float, tolerated: float, k: int) -> str:
    """The reason of one column: its difference, its test and its bound against the tolerated AUC."""
    test = (f"permutation chi-square p = {d['p']:.2g}, Holm over {k} column{'s' if k != 1 else ''} "
            f"{d['p_holm']:.2g}; Cramér's V {d['cramers_v']:.2f} [{d['cramers_v_ci_low']:.2f}, "
            f"{d['cramers_v_ci_high']:.2f}]" if d["kind"] == "categorical" else
            f"permutation p = {d['p']:.2g}, Holm over {k} column{'s' if k != 1 else ''} {d['p_holm']:.2g}")
    side = "above" if d["lower_bound"] > tolerated else "not above"
    return (f"{d['summary']} ({test}); this column alone separates the sides at AUC {d['effect_auc']:.2f}, lower "
            f"bound {d['lower_bound']:.2f} {side} the tolerated {tolerated:.2f}")
