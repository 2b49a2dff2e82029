"""Blind separability: can a model-free classifier tell members from non-members?

Input: a feature table (columns named ``<modality>.<feature>``), the labels, optionally groups (folds never
split a group) and transcripts. Nothing here knows about audio.

Models, all scored out of fold (no clip is ever scored by a model that saw it):

- ``xgboost:<modality>`` for each modality present, and ``xgboost:all`` on every feature (NaN handled
  natively);
- ``logreg:all``: L2-regularised logistic regression on median-imputed, standardised features, as a second
  opinion of a different kind;
- ``tfidf:text``: word uni- and bigram TF-IDF with logistic regression on the transcripts, when enough clips
  have one (the strongest text-only blind baseline in the literature).

Stratified k-fold (grouped when asked), repeated with fresh seeds when the sample is small; a clip's blind
score is the mean of its out-of-fold scores over the repeats. Above ``max_train_rows`` training rows, each
fold trains on a stratified subsample (every clip is still scored).
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from blindcheck import stats
from blindcheck.errors import BlindcheckError
from blindcheck.settings import Settings

KEY_COLUMNS = {"id", "label", "content_hash"}


@dataclass
class ModelResult:
    name: str  # e.g. "xgboost:recording"
    modality: str  # "all", a modality name, or "text"
    n_features: int
    auc: float
    ci_low: float
    ci_high: float
    se: float
    tpr_at_1pct_fpr: float
    tpr_at_01pct_fpr: float
    balanced_accuracy: float
    p_value: float
    p_method: str
    scores: np.ndarray = field(repr=False)

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "scores"}
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


@dataclass
class SeparabilityResult:
    models: list[ModelResult]
    ids: np.ndarray
    labels: np.ndarray
    groups: np.ndarray | None
    attributions: pd.DataFrame  # feature, modality, mean_abs_shap, share
    top_features: pd.DataFrame  # per-class summaries of the most used features
    group_table: pd.DataFrame | None
    text_terms: dict[str, list[str]] | None
    folds: int
    repeats: int
    seed: int
    group_by: str | None
    fpr_resolution: float

    def model(self, name: str) -> ModelResult:
        return next(m for m in self.models if m.name == name)

    @property
    def best(self) -> ModelResult:
        return max(self.models, key=lambda m: (m.auc, -len(m.name)))

    def modality_models(self) -> list[ModelResult]:
        return [m for m in self.models if m.modality != "all"]

    def modality_shares(self) -> dict[str, float]:
        if self.attributions.empty:
            return {}
        return self.attributions.groupby("modality")["share"].sum().sort_values(ascending=False).to_dict()

    def scores_frame(self) -> pd.DataFrame:
        df = pd.DataFrame({"id": self.ids, "label": self.labels})
        if self.groups is not None:
            df["group"] = self.groups
        for m in self.models:
            df[f"score.{m.name}"] = m.scores
        df["blind_score"] = self.best.scores
        return df


def feature_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c not in KEY_COLUMNS and "." in c and not c.startswith("_")]


def modality_of(column: str) -> str:
    return column.split(".", 1)[0]


class _XGB:
    """Gradient-boosted trees through xgboost's native API: the training matrix goes straight into a
    ``QuantileDMatrix`` (the hist method's own input; building a plain DMatrix cost 0.75 s per fit at 20k x 500),
    predictions use ``inplace_predict``. NaN is xgboost's missing value."""

    def __init__(self, settings: Settings, seed: int):
        self.rounds = settings.xgb_trees
        self.params = {
            "objective": "binary:logistic", "max_depth": settings.xgb_depth, "eta": 0.1, "subsample": 0.8,
            "colsample_bytree": 0.5, "max_bin": 32, "tree_method": "hist", "nthread": os.cpu_count() or 1,
            "seed": seed, "verbosity": 0,
        }

    def fit(self, X: np.ndarray, y: np.ndarray) -> _XGB:
        import xgboost as xgb

        dtrain = xgb.QuantileDMatrix(X, label=y, max_bin=32, missing=np.nan)
        self.booster = xgb.train(self.params, dtrain, num_boost_round=self.rounds)
        return self

    def predict_proba1(self, X: np.ndarray) -> np.ndarray:
        return self.booster.inplace_predict(X, missing=np.nan)

    def contributions(self, X: np.ndarray) -> np.ndarray:
        import xgboost as xgb

        return self.booster.predict(xgb.DMatrix(X, missing=np.nan), pred_contribs=True)


class _MedianImpute:
    """Column medians of the training rows fill NaN (sklearn's SimpleImputer takes a slow masked-array path
    for NaN: 1.1 s per fit at 20k x 500). All-NaN columns become 0."""

    def fit(self, X: np.ndarray, y: np.ndarray | None = None) -> _MedianImpute:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # "All-NaN slice": handled below
            med = np.nanmedian(X, axis=0)
        self.medians_ = np.where(np.isfinite(med), med, 0.0).astype(X.dtype)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        return np.where(np.isnan(X), self.medians_, X)

    def fit_transform(self, X: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
        return self.fit(X).transform(X)

    def get_params(self, deep: bool = True) -> dict:
        return {}

    def set_params(self, **params) -> _MedianImpute:
        return self


def _logreg(settings: Settings, seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(_MedianImpute(), StandardScaler(),
                         LogisticRegression(C=settings.logreg_c, max_iter=2000, random_state=seed))


def _tfidf(seed: int):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1, lowercase=True),
                         LogisticRegression(C=1.0, max_iter=2000, random_state=seed))


def _splits(y: np.ndarray, groups: np.ndarray | None, folds: int, seed: int):
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    if groups is None:
        k = min(folds, int(np.bincount(y).min()))
        if k < 2:
            raise BlindcheckError("too few clips of one class for cross-validation (need at least 2 of each)")
        return list(StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))
    n_groups = len(np.unique(groups))
    k = min(folds, n_groups)
    if k < 2:
        raise BlindcheckError(f"grouped cross-validation needs at least 2 groups, found {n_groups}")
    splits = list(StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y,
                                                                                            groups))
    for train, _ in splits:
        if len(np.unique(y[train])) < 2:
            raise BlindcheckError("grouped cross-validation left a training fold with one class only: each group "
                                  "holds one class and there are too few groups; use more groups or no --group-by")
    return splits


def _subsample(train: np.ndarray, y: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    if len(train) <= limit:
        return train
    from sklearn.model_selection import train_test_split

    keep, _ = train_test_split(train, train_size=limit, stratify=y[train], random_state=int(rng.integers(2**31)))
    return np.sort(keep)


def run_separability(
    table: pd.DataFrame,
    labels: np.ndarray,
    settings: Settings,
    groups: np.ndarray | None = None,
    texts: np.ndarray | None = None,
) -> SeparabilityResult:
    """Cross-validated blind classifiers on ``table``; see the module docstring.

    ``table``: one row per clip with ``<modality>.<feature>`` columns (and optionally ``id``);
    ``labels``: 1 member / 0 non-member, shape (n,); ``groups``: shape (n,) or None; ``texts``: shape (n,) or None.
    """
    y = np.asarray(labels).astype(int)
    n = len(y)
    if n != len(table):
        raise BlindcheckError(f"{len(table)} feature rows but {n} labels")
    if len(np.unique(y)) < 2:
        raise BlindcheckError("only one class present; separability needs members and non-members")
    cols = feature_columns(table)
    X = table[cols].to_numpy(dtype=np.float32) if cols else np.zeros((n, 0), np.float32)
    modalities = sorted({modality_of(c) for c in cols})
    use_text = texts is not None and np.mean([bool(str(t).strip()) for t in texts]) >= settings.text_min_coverage
    if not cols and not use_text:
        raise BlindcheckError("no features to classify: the table has no <modality>.<feature> columns")
    repeats = settings.repeats or int(min(5, max(1, math.ceil(2000 / n))))
    plan: list[tuple[str, str, list[int]]] = []
    if cols:
        plan.append(("xgboost:all", "all", list(range(len(cols)))))
        if len(modalities) > 1:
            for mod in modalities:
                plan.append((f"xgboost:{mod}", mod, [i for i, c in enumerate(cols) if modality_of(c) == mod]))
        else:
            plan[0] = (f"xgboost:{modalities[0]}", modalities[0], plan[0][2])
        plan.append(("logreg:all", "all", list(range(len(cols)))))
    if use_text:
        plan.append(("tfidf:text", "text", []))
    text_arr = np.array([str(t) for t in texts]) if use_text else None

    rng = np.random.default_rng(settings.seed)
    all_name = plan[0][0] if cols else None
    oof, (shap_sum, shap_rows), folds_used = _cross_validate(plan, X, y, text_arr, groups, settings, repeats, rng,
                                                             shap_model=all_name)
    results = []
    for name, mod, idx in plan:
        s = oof[name].mean(axis=0)
        a, lo, hi, se = stats.auc_ci(y, s, 1 - settings.alpha, settings.bootstrap, np.random.default_rng(settings.seed))
        p, method = stats.permutation_pvalue(y, s, settings.permutations, np.random.default_rng(settings.seed + 7))
        pred = s >= 0.5
        bacc = 0.5 * (pred[y == 1].mean() + (~pred[y == 0]).mean())
        results.append(ModelResult(
            name=name, modality=mod, n_features=len(idx) if name != "tfidf:text" else 0, auc=a, ci_low=lo, ci_high=hi,
            se=se, tpr_at_1pct_fpr=stats.tpr_at_fpr(y, s, 0.01), tpr_at_01pct_fpr=stats.tpr_at_fpr(y, s, 0.001),
            balanced_accuracy=float(bacc), p_value=p, p_method=method, scores=s,
        ))

    best = max(results, key=lambda m: m.auc)
    if settings.refit_permutations > 0:
        _refit_pvalue(best, next(p for p in plan if p[0] == best.name), X, y, text_arr, groups, settings, repeats)
    attributions = _attributions(cols, shap_sum, shap_rows)
    top = _top_features(table, y, attributions, settings.top_features)
    gtable = _group_table(y, groups, best.scores) if groups is not None else None
    terms = _text_terms(text_arr, y, settings.seed) if use_text else None
    return SeparabilityResult(
        models=results, ids=table["id"].to_numpy() if "id" in table else np.arange(n), labels=y, groups=groups,
        attributions=attributions, top_features=top, group_table=gtable, text_terms=terms, folds=folds_used,
        repeats=repeats, seed=settings.seed, group_by=settings.group_by, fpr_resolution=1.0 / int((y == 0).sum()),
    )


def _cross_validate(plan, X, y, text_arr, groups, settings: Settings, repeats: int, rng: np.random.Generator,
                    shap_model: str | None = None):
    """Out-of-fold scores, shape (repeats, n), of every model in ``plan``; SHAP sums of ``shap_model``."""
    n = len(y)
    oof = {name: np.zeros((repeats, n)) for name, _, _ in plan}
    shap_sum, shap_rows = np.zeros(X.shape[1]), 0
    folds_used = settings.folds
    for r in range(repeats):
        seed = settings.seed + 1000 * r
        splits = _splits(y, groups, settings.folds, seed)
        folds_used = len(splits)
        for train, test in splits:
            train = _subsample(train, y, settings.max_train_rows, rng)
            for name, _mod, idx in plan:
                if name == "tfidf:text":
                    model = _tfidf(seed).fit(text_arr[train], y[train])
                    oof[name][r, test] = model.predict_proba(text_arr[test])[:, 1]
                elif name.startswith("xgboost"):
                    model = _XGB(settings, seed).fit(X[np.ix_(train, idx)], y[train])
                    xt = X[np.ix_(test, idx)]
                    oof[name][r, test] = model.predict_proba1(xt)
                    if name == shap_model and r == 0:
                        shap_sum, shap_rows = _accumulate_shap(model, xt, shap_sum, shap_rows, rng)
                else:
                    model = _logreg(settings, seed).fit(X[np.ix_(train, idx)], y[train])
                    oof[name][r, test] = model.predict_proba(X[np.ix_(test, idx)])[:, 1]
    return oof, (shap_sum, shap_rows), folds_used


def _refit_pvalue(best: ModelResult, plan_item, X, y, text_arr, groups, settings: Settings, repeats: int) -> None:
    """Replace the best model's p-value by a full-refit permutation test (Ojala & Garriga 2010, test 1):
    the whole cross-validation is re-run on randomly relabelled clips, so the null distribution includes
    everything the classifier can learn from the data's structure (clusters of near-identical clips, which
    make the cheaper score-permutation p-value too small)."""
    rng = np.random.default_rng(settings.seed + 11)
    hits = 0
    for _ in range(settings.refit_permutations):
        yp = rng.permutation(y)
        oof, _, _ = _cross_validate([plan_item], X, yp, text_arr, groups, settings, repeats, rng)
        hits += stats.auc(yp, oof[plan_item[0]].mean(axis=0)) >= best.auc - 1e-12
    best.p_value = (1 + hits) / (1 + settings.refit_permutations)
    best.p_method = f"refit permutation ({settings.refit_permutations} full cross-validations on relabelled clips)"


def _accumulate_shap(model: _XGB, xt: np.ndarray, total: np.ndarray, rows: int, rng: np.random.Generator):
    if len(xt) > 2000:
        xt = xt[rng.choice(len(xt), 2000, replace=False)]
    contrib = model.contributions(xt)
    return total + np.abs(contrib[:, :-1]).sum(axis=0), rows + len(xt)


def _attributions(cols: list[str], shap_sum: np.ndarray, rows: int) -> pd.DataFrame:
    if not cols or rows == 0:
        return pd.DataFrame(columns=["feature", "modality", "mean_abs_shap", "share"])
    mean_abs = shap_sum / rows
    total = mean_abs.sum()
    df = pd.DataFrame({"feature": cols, "modality": [modality_of(c) for c in cols], "mean_abs_shap": mean_abs,
                       "share": mean_abs / total if total > 0 else 0.0})
    return df.sort_values("mean_abs_shap", ascending=False, kind="mergesort").reset_index(drop=True)


def cohen_d(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) < 2 or len(b) < 2:
        return math.nan
    pooled = math.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
    return float((a.mean() - b.mean()) / pooled) if pooled > 0 else (0.0 if a.mean() == b.mean() else math.inf)


def _top_features(table: pd.DataFrame, y: np.ndarray, attributions: pd.DataFrame, k: int) -> pd.DataFrame:
    rows = []
    shares = attributions.set_index("feature")["share"]
    for feat in attributions["feature"].head(k):
        v = table[feat].to_numpy(dtype=float)
        mem, non = v[y == 1], v[y == 0]
        ok = np.isfinite(v)
        row = {"feature": feat, "modality": modality_of(feat), "share": float(shares[feat])}
        for side, vals in (("member", mem), ("nonmember", non)):
            fin = vals[np.isfinite(vals)]
            row[f"{side}_median"] = float(np.median(fin)) if fin.size else math.nan
            row[f"{side}_mean"] = float(fin.mean()) if fin.size else math.nan
            row[f"{side}_std"] = float(fin.std()) if fin.size else math.nan
            row[f"{side}_nan_share"] = float(np.mean(~np.isfinite(vals)))
        row["cohen_d"] = cohen_d(mem, non)
        row["auc"] = stats.auc(y[ok], v[ok]) if ok.sum() > 2 and len(np.unique(y[ok])) == 2 else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _group_table(y: np.ndarray, groups: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
    rows = []
    for g in pd.unique(groups):
        sel = groups == g
        yy, ss = y[sel], scores[sel]
        rows.append({
            "group": str(g), "n": int(sel.sum()), "members": int(yy.sum()), "nonmembers": int((1 - yy).sum()),
            "auc": stats.auc(yy, ss) if 0 < yy.sum() < len(yy) else math.nan,
            "member_mean_score": float(ss[yy == 1].mean()) if (yy == 1).any() else math.nan,
            "nonmember_mean_score": float(ss[yy == 0].mean()) if (yy == 0).any() else math.nan,
        })
    return pd.DataFrame(rows).sort_values("n", ascending=False, kind="mergesort").reset_index(drop=True)


def _text_terms(texts: np.ndarray, y: np.ndarray, seed: int, k: int = 5) -> dict[str, list[str]]:
    """Words that most push a transcript towards each side (one TF-IDF model on all clips, for explanation
    only: the scores above come from the out-of-fold models)."""
    model = _tfidf(seed).fit(texts, y)
    vocab = np.array(model[0].get_feature_names_out())
    coef = model[-1].coef_[0]
    order = np.argsort(coef)
    return {"members": [str(vocab[i]) for i in order[::-1][:k] if coef[i] > 0],
            "nonmembers": [str(vocab[i]) for i in order[:k] if coef[i] < 0]}
