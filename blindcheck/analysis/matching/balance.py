"""Balance of a matched subset: standardised mean differences (against the pre-matching pooled SD) and
variance ratios per feature, and their summary per modality. Pure numpy/pandas."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from blindcheck.analysis.separability import modality_of

SMD_BALANCED = 0.1


def records(df: pd.DataFrame) -> list[dict]:
    """A table as a list of row dicts (what result.json and match.json hold)."""
    return df.to_dict("records")


def pooled_sd(a: np.ndarray, b: np.ndarray) -> float:
    """The root mean of the two sides' variances (finite values; nan with fewer than 2 on a side)."""
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) < 2 or len(b) < 2:
        return math.nan
    return math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)


def smd(a: np.ndarray, b: np.ndarray, sd: float | None = None) -> float:
    """Standardised mean difference: members minus non-members over ``sd``, by default the root mean of the two
    variances. After matching, pass the *pre-matching* pooled SD (:func:`balance_table` does), as MatchIt and
    Austin (2009) do: a subset that shrinks the spread would otherwise look balanced by its own smaller SD."""
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) < 2 or len(b) < 2:
        return math.nan
    pooled = pooled_sd(a, b) if sd is None else sd
    diff = a.mean() - b.mean()
    if pooled > 0:
        return float(diff / pooled)
    return 0.0 if diff == 0 else math.copysign(math.inf, diff)


def variance_ratio(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) < 2 or len(b) < 2:
        return math.nan
    va, vb = a.var(ddof=1), b.var(ddof=1)
    if vb > 0:
        return float(va / vb)
    return 1.0 if va == 0 else math.inf


def balance_table(X: np.ndarray, cols: list[str], y: np.ndarray, keep: np.ndarray) -> pd.DataFrame:
    """Per feature: SMD and variance ratio (members / non-members) before (all clips) and after (kept); both SMDs
    divide by the pooled SD before matching, so that they differ only in the means."""
    rows = []
    for j, c in enumerate(cols):
        v = X[:, j]
        sd = pooled_sd(v[y == 1], v[y == 0])
        rows.append({"feature": c, "modality": modality_of(c), "smd_before": smd(v[y == 1], v[y == 0], sd),
                     "smd_after": smd(v[keep & (y == 1)], v[keep & (y == 0)], sd),
                     "variance_ratio_before": variance_ratio(v[y == 1], v[y == 0]),
                     "variance_ratio_after": variance_ratio(v[keep & (y == 1)], v[keep & (y == 0)])})
    df = pd.DataFrame(rows, columns=["feature", "modality", "smd_before", "smd_after", "variance_ratio_before",
                                     "variance_ratio_after"])
    order = np.argsort(-np.nan_to_num(np.abs(df["smd_before"].to_numpy(float)), nan=-1.0), kind="mergesort")
    return df.iloc[order].reset_index(drop=True)


def balance_summary(bal: pd.DataFrame) -> dict:
    """Per modality (and ``all``): features, share with |SMD| < 0.1 and the largest |SMD|, before and after."""
    out = {}
    for mod, g in [("all", bal), *bal.groupby("modality", sort=True)]:
        entry = {"features": int(len(g))}
        for when in ("before", "after"):
            s = np.abs(g[f"smd_{when}"].to_numpy(float))
            ok = ~np.isnan(s)
            entry[f"balanced_share_{when}"] = float(np.mean(s[ok] < SMD_BALANCED)) if ok.any() else None
            entry[f"max_abs_smd_{when}"] = float(np.max(s[ok])) if ok.any() else None
            entry[f"mean_abs_smd_{when}"] = float(np.mean(s[ok & np.isfinite(s)])) if (ok & np.isfinite(s)).any() \
                else None
        out[str(mod)] = entry
    return out

