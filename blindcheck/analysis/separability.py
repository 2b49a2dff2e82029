"""Blind separability: can a model-free classifier tell members from non-members?

Input: a feature table (columns named ``<modality>.<feature>``), the labels, optionally groups (folds never
split a group) and transcripts. Nothing here knows about audio.

Models, all scored out of fold (no clip is ever scored by a model that saw it):

- ``xgboost:<modality>`` for each modality present, and ``xgboost:all`` on every feature (NaN handled
  natively);
- ``logreg:all``: L2-regularised logistic regression on median-imputed, standardised features, as a second
  opinion of a different kind;
- ``single:all``: the one feature that best separates the training folds, in its direction (a shift in one
  quantity is found with few clips);
- ``tfidf:text``: word uni- and bigram TF-IDF with logistic regression on the transcripts, when enough clips
  have one (the strongest text-only blind baseline in the literature).

Text sources that are not transcripts (captions, prompts, tags, lyrics; the table's ``text:<source>`` columns hold
their texts) are modalities of their own: ``text.<source>.*`` features get ``xgboost:text.<source>``, and the texts
``tfidf:text.<source>``, so a confound in the captions alone is led, and named, by the caption's models; no model
but the ``all`` ones mixes a source with the transcript.

Stratified k-fold (grouped when asked), repeated with fresh seeds when the sample is small; a clip's blind
score is the mean of its out-of-fold scores over the repeats. Above ``max_train_rows`` training rows, each
fold trains on a stratified subsample (every clip is still scored).

Statistics: every model's AUC with a DeLong interval (cluster-robust, Obuchowski, when groups are given), and
one family-wise permutation test over all models and two criteria — the best AUC and the largest *isolated
subset* of one side (see :mod:`blindcheck.analysis.permutation`). The best model is chosen by one rule,
:func:`best_model`, wherever a "best" is needed.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum

# xgboost's and BLAS's OpenMP threads spin while they wait; on a machine busy with other work that made the
# classifier 20-28x slower. Passive waiting must be set before the OpenMP runtime starts (xgboost is imported
# lazily below, after this line).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from blindcheck.analysis import isolation, permutation, stats  # noqa: E402
from blindcheck.errors import BlindcheckError  # noqa: E402
from blindcheck.features.modalities import EVIDENCE, Modality  # noqa: E402
from blindcheck.runtime.executors import usable_cores  # noqa: E402
from blindcheck.runtime.pools import deferred  # noqa: E402
from blindcheck.settings import Settings, smallest_permutations  # noqa: E402

KEY_COLUMNS = {"id", "label", "content_hash"}


class ModelKind(StrEnum):
    """The kinds of blind model, as typed identifiers (equal to their names, which result.json records)."""

    XGBOOST = "xgboost"  # gradient-boosted trees on the features
    LOGREG = "logreg"  # standardised L2 logistic regression on the features
    SINGLE = "single"  # the best single feature, chosen inside each training fold
    TFIDF = "tfidf"  # word uni- and bigram TF-IDF + logistic regression on the transcripts (or a text source)


XGBOOST, LOGREG, TFIDF, SINGLE = ModelKind.XGBOOST, ModelKind.LOGREG, ModelKind.TFIDF, ModelKind.SINGLE
ALL = "all"  # the modality of models fitted on every feature
ProgressFn = Callable[[str, int, int, float | None], None]  # phase, done, total, seconds left (estimate)


@dataclass(frozen=True)
class ModelSpec:
    """A blind model: its kind (xgboost, logreg, tfidf) and the modality it sees ("all" for every feature)."""

    kind: ModelKind
    modality: str  # a Modality, or ALL

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.modality}"


def available_threads(limit: int | None = None) -> int:
    """Cores this process may use (its CPU affinity: :func:`blindcheck.runtime.executors.usable_cores`), at most
    ``limit``."""
    cores = usable_cores()
    return max(1, min(cores, limit) if limit else cores)


@dataclass
class ModelResult:
    name: str  # e.g. "xgboost:recording"
    modality: str  # "all", a modality name, or "text"
    kind: str  # "xgboost", "logreg" or "tfidf"
    n_features: int
    auc: float
    ci_low: float
    ci_high: float
    se: float
    tpr_at_1pct_fpr: float
    tpr_at_01pct_fpr: float
    balanced_accuracy: float
    p_value: float  # this model's own p-value of AUC > 0.5 (no correction for choosing it; see the family test)
    p_method: str
    scores: np.ndarray = field(repr=False)
    ci_df: int | None = None  # degrees of freedom of a cluster-robust interval (t quantile); None: normal
    isolation_members: float = math.nan  # TPR at FPR <= 1%: share of members isolated at the top
    isolation_nonmembers: float = math.nan  # TNR at FNR <= 1%: share of non-members isolated at the bottom

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "scores"}
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


def best_model(models: list[ModelResult]) -> ModelResult:
    """The one rule for "the best blind model": the highest AUC; ties (to 1e-9) go to the smaller standard
    error, then to the name in alphabetical order. Every consumer (verdict, reasons, refits, result.json,
    blind_scores.parquet) uses this function."""
    if not models:
        raise BlindcheckError("no blind model was fitted")
    top = max(m.auc for m in models)
    tied = [m for m in models if m.auc >= top - 1e-9]
    return min(tied, key=lambda m: (m.se if math.isfinite(m.se) else math.inf, m.name))


@dataclass
class SubsetFinding:
    """The largest share of one side that a blind model isolates at <= 1% error on the other side."""

    model: str
    side: str  # "members" or "nonmembers"
    rate: float  # TPR (members) or TNR (non-members) at the 1% operating point
    n_side: int
    n_isolated: int
    fpr: float
    n_other: int = 0  # clips on the other side, whose (allowed + 1)-th highest score is the threshold
    allowed: int = 0
    ids: list = field(repr=False, default_factory=list)
    features: list[dict] = field(default_factory=list)  # what the isolated clips share

    @property
    def share(self) -> float:
        """Estimated share of the side that is separable: the rate less what lands above the threshold by chance,
        (rate - f) / (1 - f), f = (allowed + 1) / (n_other + 1) (:mod:`blindcheck.analysis.isolation`)."""
        return isolation.estimate(self.n_isolated, self.n_side, self.n_other, self.allowed)


    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "ids"}
        d["share"] = self.share
        return d


@dataclass
class SeparabilityResult:
    models: list[ModelResult]
    ids: np.ndarray
    labels: np.ndarray
    groups: np.ndarray | None
    attributions: pd.DataFrame  # feature, modality, mean_abs_shap, share
    top_features: pd.DataFrame  # per-class summaries of the most used features
    group_table: pd.DataFrame | None
    text_terms: dict | None  # {"members", "nonmembers"}: the transcript's; "sources": the same per text source
    folds: int
    repeats: int
    seed: int
    group_by: str | None
    fpr_resolution: float
    family: permutation.FamilyTest | None = None
    subset: SubsetFinding | None = None
    n_groups: dict | None = None  # {"total", "members_only", "nonmembers_only", "mixed"} with groups
    notes: list[str] = field(default_factory=list)  # models left out and why (e.g. tfidf on wordless text)

    def model(self, name: str) -> ModelResult:
        return next(m for m in self.models if m.name == name)

    def sides(self, model: ModelResult, side: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Scores of ``side``'s clips and of the other side's, oriented so that isolating ``side`` means scoring
        high (members at the top, non-members at the bottom), and ``side``'s groups for the isolated share's design
        effect (None without groups). A group with clips on both sides is split into single clips there: its clips
        compete with its own clips on the other side for the threshold, so its clustering does not inflate the
        count the way a group on one side does (on the take split of the bundled speech, 6 speakers all on both
        sides, counting them whole turned an upper bound of 6% into 35%)."""
        on = (self.labels == 1) if side == "members" else (self.labels == 0)
        s = model.scores if side == "members" else -model.scores
        if self.groups is None:
            return s[on], s[~on], None
        g = np.asarray(self.groups).astype(str)
        mixed = np.isin(g[on], np.unique(g[~on]))
        side_groups = np.where(mixed, np.char.add("clip:", np.nonzero(on)[0].astype(str)), g[on])
        return s[on], s[~on], side_groups

    @property
    def best(self) -> ModelResult:
        return best_model(self.models)

    def modality_models(self) -> list[ModelResult]:
        return [m for m in self.models if m.modality != ALL]

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
    """The blind classifiers' inputs: every ``<modality>.<feature>`` column except the evidence modalities'
    (``content.*``: tested per side by :mod:`blindcheck.analysis.metadata`, not learned from)."""
    evidence = {str(m) for m in EVIDENCE}
    return [c for c in table.columns if c not in KEY_COLUMNS and "." in c and not c.startswith("_")
            and c.split(".", 1)[0] not in evidence]


SOURCE_TEXT = "text:"  # a table column ``text:<source>`` holds the texts of a text source that is not a transcript


def modality_of(column: str) -> str:
    """The modality a feature column belongs to: its first name part, except that the features of a text source
    that is not a transcript (``text.<source>.<feature>``: two dots) form the modality ``text.<source>``."""
    parts = column.split(".", 2)
    return f"{parts[0]}.{parts[1]}" if parts[0] == Modality.TEXT and len(parts) == 3 else parts[0]


def source_texts(table: pd.DataFrame) -> dict[str, np.ndarray]:
    """The texts of each text source in ``table`` (columns ``text:<source>``), keyed by its modality
    (``text.<source>``)."""
    return {f"text.{c[len(SOURCE_TEXT):]}": table[c].fillna("").astype(str).to_numpy()
            for c in table.columns if isinstance(c, str) and c.startswith(SOURCE_TEXT)}


class _XGB:
    """Gradient-boosted trees through xgboost's native API: the training matrix goes straight into a
    ``QuantileDMatrix`` (the hist method's own input; building a plain DMatrix cost 0.75 s per fit at 20k x 500),
    predictions use ``inplace_predict``. NaN is xgboost's missing value."""

    def __init__(self, settings: Settings, seed: int, threads: int = 1):
        self.rounds = settings.xgb_trees
        self.params = {
            "objective": "binary:logistic", "max_depth": settings.xgb_depth, "eta": 0.1, "subsample": 0.8,
            "colsample_bytree": 0.5, "max_bin": 32, "tree_method": "hist", "nthread": threads,
            "seed": seed, "verbosity": 0,
        }

    def fit(self, X: np.ndarray, y: np.ndarray) -> _XGB:
        import xgboost as xgb

        with deferred():  # no Ctrl-C/SIGTERM raised inside xgboost's Python callbacks (see pools.deferred)
            dtrain = xgb.QuantileDMatrix(X, label=y, max_bin=32, missing=np.nan)
            self.booster = xgb.train(self.params, dtrain, num_boost_round=self.rounds)
            del dtrain
        return self

    def predict_proba1(self, X: np.ndarray) -> np.ndarray:
        with deferred():
            return self.booster.inplace_predict(X, missing=np.nan)

    def contributions(self, X: np.ndarray) -> np.ndarray:
        import xgboost as xgb

        with deferred():
            return self.booster.predict(xgb.DMatrix(X, missing=np.nan), pred_contribs=True)


def _column_medians(X: np.ndarray) -> np.ndarray:
    """``np.nanmedian(X, axis=0)``, the same values to the last bit, from one sort of the columns (below 600 rows
    numpy takes a masked-array path: 17 ms at 480 x 921, this 2 ms). All-NaN columns give NaN."""
    n, p = X.shape
    if n == 0:
        return np.full(p, np.nan, dtype=X.dtype)
    srt = np.sort(X, axis=0)  # NaN sorts last: each column's k values come first
    k = n - np.isnan(X).sum(axis=0)
    hi = np.minimum(k // 2, n - 1)
    lo = np.maximum(np.where(k % 2 == 1, hi, hi - 1), 0)
    cols = np.arange(p)
    a, b = srt[lo, cols], srt[hi, cols]
    with np.errstate(invalid="ignore", over="ignore"):
        med = np.where(k % 2 == 1, a, (a + b) / 2)  # the mean of the middle two, in X's precision, as numpy's
    return np.where(k > 0, med, np.nan).astype(X.dtype, copy=False)


def _column_ranks(X: np.ndarray) -> np.ndarray:
    """``scipy.stats.rankdata(X, axis=0)`` of a NaN-free matrix (average ranks of ties, float64), the same values,
    from one sort of each column (480 x 921, 100 columns with ties: 37 ms with scipy, 20 ms here): ties share
    their average rank, so their order in the sort does not matter."""
    n, p = X.shape
    XT = np.ascontiguousarray(X.T)
    order = np.argsort(XT, axis=1)
    srt = np.take_along_axis(XT, order, axis=1)
    avg = np.tile(np.arange(1, n + 1, dtype=np.float64), (p, 1))
    tied = np.flatnonzero((srt[:, 1:] == srt[:, :-1]).any(axis=1))
    if tied.size:  # the columns with ties: each tie group's first and last position
        s = srt[tied]
        pos = np.arange(n)[None, :]
        starts = np.ones(s.shape, dtype=bool)
        starts[:, 1:] = s[:, 1:] != s[:, :-1]
        ends = np.ones(s.shape, dtype=bool)
        ends[:, :-1] = starts[:, 1:]
        first = np.maximum.accumulate(np.where(starts, pos, 0), axis=1)
        last = np.minimum.accumulate(np.where(ends, pos, n)[:, ::-1], axis=1)[:, ::-1]
        avg[tied] = 0.5 * (first + last + 2)  # scipy's 0.5 * (count[d] + count[d - 1] + 1)
    ranks = np.empty((p, n))
    np.put_along_axis(ranks, order, avg, axis=1)
    return ranks.T


class _MedianImpute:
    """Column medians of the training rows fill NaN (sklearn's SimpleImputer takes a slow masked-array path
    for NaN: 1.1 s per fit at 20k x 500). All-NaN columns become 0."""

    def fit(self, X: np.ndarray, y: np.ndarray | None = None) -> _MedianImpute:
        med = _column_medians(X)
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


class _SingleFeature:
    """The one feature that best separates the training clips (largest |AUC - 0.5|), in its direction; a clip's
    score is where its value falls in that feature's training distribution (0..1). Most confounds are one
    quantity (a level, a bandwidth, a sample rate), and this model finds such a shift with fewer clips than
    models that must first learn to ignore every other feature."""

    def fit(self, X: np.ndarray, y: np.ndarray) -> _SingleFeature:
        imp = _MedianImpute().fit(X)
        Xi = imp.transform(X)
        n1 = int(y.sum())
        n0 = len(y) - n1
        r = _column_ranks(Xi)
        auc = (r[y == 1].sum(axis=0) - n1 * (n1 + 1) / 2) / max(n1 * n0, 1)
        self.j = int(np.argmax(np.abs(auc - 0.5)))
        self.sign = 1.0 if auc[self.j] >= 0.5 else -1.0
        self.median = imp.medians_[self.j]
        self.train = np.sort(self.sign * Xi[:, self.j])
        return self

    def predict_proba1(self, X: np.ndarray) -> np.ndarray:
        v = X[:, self.j]
        v = self.sign * np.where(np.isnan(v), self.median, v)
        lo = np.searchsorted(self.train, v, "left")
        hi = np.searchsorted(self.train, v, "right")
        return (lo + hi) / (2.0 * len(self.train))  # mid-rank of the value among the training clips


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


def _has_vocabulary(texts) -> bool:
    """Whether the TF-IDF model's tokenizer finds any term in ``texts`` (single characters are no terms)."""
    analyse = _tfidf(0)[0].build_analyzer()
    return any(analyse(str(t)) for t in texts)


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
                                  "holds one class and there are too few groups; use more groups or no grouping")
    return splits


def _subsample(train: np.ndarray, y: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    if len(train) <= limit:
        return train
    from sklearn.model_selection import train_test_split

    keep, _ = train_test_split(train, train_size=limit, stratify=y[train], random_state=int(rng.integers(2**31)))
    return np.sort(keep)


def _plan(cols: list[str], use_text: bool, sources: tuple[str, ...] = ()) -> list[tuple[ModelSpec, list[int]]]:
    """The models to fit, each with the feature columns it sees (``sources``: the text sources' modalities that
    get a TF-IDF model)."""
    plan: list[tuple[ModelSpec, list[int]]] = []
    modalities = sorted({modality_of(c) for c in cols})
    if cols:
        everything = list(range(len(cols)))
        if len(modalities) > 1:
            plan.append((ModelSpec(XGBOOST, ALL), everything))
            for mod in modalities:
                plan.append((ModelSpec(XGBOOST, mod), [i for i, c in enumerate(cols) if modality_of(c) == mod]))
        else:
            plan.append((ModelSpec(XGBOOST, modalities[0]), everything))
        plan.append((ModelSpec(LOGREG, ALL), everything))
        plan.append((ModelSpec(SINGLE, ALL), everything))
    if use_text:
        plan.append((ModelSpec(TFIDF, Modality.TEXT), []))
    for mod in sources:
        plan.append((ModelSpec(TFIDF, mod), []))
    return plan


def run_separability(
    table: pd.DataFrame,
    labels: np.ndarray,
    settings: Settings,
    groups: np.ndarray | None = None,
    texts: np.ndarray | None = None,
    threads: int | None = None,
    progress: ProgressFn | None = None,
) -> SeparabilityResult:
    """Cross-validated blind classifiers on ``table``; see the module docstring.

    ``table``: one row per clip with ``<modality>.<feature>`` columns (and optionally ``id``);
    ``labels``: 1 member / 0 non-member, shape (n,); ``groups``: shape (n,) or None; ``texts``: shape (n,) or None
    (the transcripts; the other text sources come from ``table``'s ``text:<source>`` columns).
    ``threads``: cores for xgboost and BLAS (default: every core this process may use); ``progress`` is called
    as ``progress(phase, done, total, seconds_left)`` during the cross-validation and the refits.
    """
    y = np.asarray(labels).astype(int)
    n = len(y)
    if n != len(table):
        raise BlindcheckError(f"{len(table)} feature rows but {n} labels")
    if len(np.unique(y)) < 2:
        raise BlindcheckError("only one class present; separability needs members and non-members")
    cols = feature_columns(table)
    X = table[cols].to_numpy(dtype=np.float32) if cols else np.zeros((n, 0), np.float32)
    use_text = texts is not None and np.mean([bool(str(t).strip()) for t in texts]) >= settings.text_min_coverage
    notes = []
    if use_text and not _has_vocabulary(texts):
        use_text = False
        notes.append(f"{ModelSpec(TFIDF, Modality.TEXT).name} skipped: no transcript holds a word of two or more "
                     "characters (an empty vocabulary)")
    source_arr = {}
    for mod, t in source_texts(table).items():
        if np.mean([bool(x.strip()) for x in t]) < settings.text_min_coverage:
            notes.append(f"{ModelSpec(TFIDF, mod).name} skipped: fewer than {settings.text_min_coverage:.0%} of "
                         "the clips have its text")
        elif not _has_vocabulary(t):
            notes.append(f"{ModelSpec(TFIDF, mod).name} skipped: no text holds a word of two or more characters")
        else:
            source_arr[mod] = t
    if not cols and not use_text and not source_arr:
        raise BlindcheckError("no features to classify: the table has no <modality>.<feature> columns"
                              + (f"; {notes[0]}" if notes else ""))
    repeats = settings.repeats or int(min(5, max(1, math.ceil(2000 / n))))
    plan = _plan(cols, use_text, tuple(source_arr))
    text_arr = {**({Modality.TEXT: np.array([str(t) for t in texts])} if use_text else {}), **source_arr}
    groups = None if groups is None else np.asarray(groups).astype(str)
    threads = available_threads(threads)

    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(settings.seed)
    # With the refit test, the observed scores are computed as every relabelling's are (one thread per fit, see
    # _Refit), so the observed statistic and the relabelled ones come from one procedure, to the last bit.
    fit_threads = 1 if settings.refit_permutations > 0 else threads
    with threadpool_limits(fit_threads):
        cv = _CV(plan, X, y, text_arr, groups, settings, repeats, fit_threads)
        oof, (shap_sum, shap_rows) = cv.run(y, rng, shap_model=plan[0][0] if cols else None,
                                            progress=progress and (lambda d, t, left: progress("classifier", d, t,
                                                                                               left)))
        refit = None
        if settings.refit_permutations > 0:
            k = min(settings.refit_repeats or repeats, repeats)
            refit = _Refit(cv, threads, k, np.column_stack([oof[spec.name][:k].mean(axis=0) for spec, _ in plan]))

        # single:all chooses among every feature but scores with one (a different one per fold, possibly)
        scored = [(spec, 1 if spec.kind == SINGLE else len(idx), oof[spec.name].mean(axis=0)) for spec, idx in plan]
        result = evaluate_scores(scored, y, settings, groups=groups, table=table, refit=refit,
                                 progress=progress)
    result.attributions = _attributions(cols, shap_sum, shap_rows)
    result.top_features = _top_features(table, y, result.attributions, settings.top_features)
    result.subset = _subset_finding(result.models, table, cols, y, result.ids, result.attributions)
    result.text_terms = _text_terms(text_arr[Modality.TEXT], y, settings.seed) if use_text else None
    if source_arr:
        result.text_terms = {**(result.text_terms or {}), "sources": {
            mod.split(".", 1)[1]: _text_terms(t, y, settings.seed) for mod, t in source_arr.items()}}
    result.folds, result.repeats = cv.folds_used, repeats
    if cv.folds_used < settings.folds:
        why = f"{len(np.unique(groups))} groups" if groups is not None else \
            f"the smaller side has {int(np.bincount(y).min())} clips"
        notes.append(f"folds: {settings.folds} asked for, {cv.folds_used} used ({why})")
    result.notes = notes
    return result


def evaluate_scores(
    scored: list[tuple[ModelSpec, int, np.ndarray]],
    labels: np.ndarray,
    settings: Settings,
    groups: np.ndarray | None = None,
    table: pd.DataFrame | None = None,
    refit: Callable[[np.ndarray], np.ndarray] | None = None,
    progress: ProgressFn | None = None,
) -> SeparabilityResult:
    """Metrics of every model's out-of-fold scores and the family-wise test over all of them.

    ``scored``: (model, number of features, scores of shape (n,)) per model; ``refit(labels) -> (n, m)`` re-runs
    the cross-validation on relabelled clips (the refit permutation test, when ``settings.refit_permutations``).
    Feature summaries (attributions, top features) are left empty; :func:`run_separability` fills them.
    """
    y = np.asarray(labels).astype(int)
    n = len(y)
    groups = None if groups is None else np.asarray(groups).astype(str)
    results = []
    for spec, n_features, s in scored:
        s = np.asarray(s, dtype=float)
        a, lo, hi, se = stats.auc_ci(y, s, 1 - settings.alpha, settings.bootstrap,
                                     np.random.default_rng(settings.seed), groups=groups)
        pred = s >= 0.5
        bacc = 0.5 * (pred[y == 1].mean() + (~pred[y == 0]).mean())
        results.append(ModelResult(
            name=spec.name, modality=spec.modality, kind=spec.kind, n_features=n_features, auc=a, ci_low=lo,
            ci_high=hi, se=se, tpr_at_1pct_fpr=stats.tpr_at_fpr(y, s, 0.01),
            tpr_at_01pct_fpr=stats.tpr_at_fpr(y, s, 0.001), balanced_accuracy=float(bacc), p_value=math.nan,
            p_method="", scores=s,
            ci_df=(len(np.unique(groups)) - 1) if groups is not None and settings.bootstrap <= 0 else None,
            isolation_members=stats.tpr_at_fpr(y, s, permutation.FPR_TARGET),
            isolation_nonmembers=stats.tpr_at_fpr(1 - y, -s, permutation.FPR_TARGET),
        ))
    scores = np.column_stack([m.scores for m in results])
    prng = np.random.default_rng(settings.seed + 7)
    if refit is not None and settings.refit_permutations > 0:
        family = permutation.refit_permutation_test(
            scores, y, groups, settings.refit_permutations, prng, refit,
            progress=progress and _eta(lambda d, t, left: progress("refit permutations", d, t, left)),
            upper_beta=settings.alpha / 2)
    else:
        family = permutation.score_permutation_test(
            scores, y, groups, settings.permutations, prng,
            min_permutations=max(199, smallest_permutations(settings.alpha)), upper_beta=settings.alpha / 2)
    for mr, p in zip(results, family.model_p, strict=True):
        mr.p_value, mr.p_method = p, family.method
    best = best_model(results)
    ids = table["id"].to_numpy() if table is not None and "id" in table else np.arange(n)
    empty_attr = pd.DataFrame(columns=["feature", "modality", "mean_abs_shap", "share"])
    return SeparabilityResult(
        models=results, ids=ids, labels=y, groups=groups, attributions=empty_attr, top_features=pd.DataFrame(),
        group_table=_group_table(y, groups, best.scores) if groups is not None else None, text_terms=None,
        folds=settings.folds, repeats=settings.repeats or 1, seed=settings.seed, group_by=settings.group_by,
        fpr_resolution=1.0 / int((y == 0).sum()), family=family,
        subset=_subset_finding(results, table if table is not None else pd.DataFrame(), [], y, ids),
        n_groups=_group_counts(y, groups) if groups is not None else None,
    )


def _eta(report: Callable[[int, int, float | None], None]) -> Callable[[int, int], None]:
    """Wrap ``report(done, total, seconds_left)`` into a ``(done, total)`` callback that estimates the time left."""
    start = time.monotonic()

    def update(done: int, total: int) -> None:
        el = time.monotonic() - start
        report(done, total, el / done * (total - done) if done else None)

    return update


class _CV:
    """Out-of-fold scores of every model in ``plan`` under a given label vector (the observed one, or a
    relabelling for the refit permutation test).

    What does not depend on the labels is built once, here, for the observed run and every relabelling: each
    model's columns as one contiguous float32 matrix (a fold takes its rows from it; the values are those of
    ``X[np.ix_(train, idx)]``), and which texts hold a term (a fold's TF-IDF model is fitted when any of its
    training texts does, as :func:`_has_vocabulary` of them would say). The folds themselves are stratified by
    the labels, so they, and everything fitted on a fold, are drawn anew for each label vector."""

    def __init__(self, plan, X, y, text_arr, groups, settings: Settings, repeats: int, threads: int):
        self.plan, self.X, self.text_arr, self.groups = plan, X, text_arr, groups
        self.settings, self.repeats, self.threads = settings, repeats, threads
        self.folds_used = settings.folds
        self.inputs = {spec.name: X if len(idx) == X.shape[1] else np.ascontiguousarray(X[:, idx])
                       for spec, idx in plan if spec.kind != TFIDF}
        analyse = _tfidf(0)[0].build_analyzer()
        self.has_terms = {mod: np.array([bool(analyse(str(t))) for t in texts], dtype=bool)
                          for mod, texts in text_arr.items()}

    def variant(self, threads: int, repeats: int) -> _CV:
        """The same cross-validation (its first ``repeats`` repeats), its fits on ``threads`` threads (shares the
        arrays)."""
        other = copy.copy(self)
        other.threads, other.repeats = threads, repeats
        return other

    def run(self, y: np.ndarray, rng: np.random.Generator, shap_model: ModelSpec | None = None,
            progress: Callable[[int, int, float | None], None] | None = None):
        """Out-of-fold scores, shape (repeats, n), per model name; SHAP sums of ``shap_model``."""
        settings, X = self.settings, self.X
        n = len(y)
        oof = {spec.name: np.zeros((self.repeats, n)) for spec, _ in self.plan}
        shap_sum, shap_rows = np.zeros(X.shape[1]), 0
        tick = _eta(progress) if progress else None
        done, total = 0, None
        for r in range(self.repeats):
            seed = settings.seed + 1000 * r
            splits = _splits(y, self.groups, settings.folds, seed)
            self.folds_used = len(splits)
            total = total or self.repeats * len(splits) * len(self.plan)
            for train, test in splits:
                train = _subsample(train, y, settings.max_train_rows, rng)
                for spec, _ in self.plan:
                    if spec.kind == TFIDF:
                        texts = self.text_arr[spec.modality]
                        if self.has_terms[spec.modality][train].any():
                            model = _tfidf(seed).fit(texts[train], y[train])
                            oof[spec.name][r, test] = model.predict_proba(texts[test])[:, 1]
                        else:  # no term in this training fold: the model knows nothing
                            oof[spec.name][r, test] = 0.5
                        done += 1
                        if tick:
                            tick(done, total)
                        continue
                    Xm = self.inputs[spec.name]
                    xt = Xm[test]
                    if spec.kind == XGBOOST:
                        model = _XGB(settings, seed, self.threads).fit(Xm[train], y[train])
                        oof[spec.name][r, test] = model.predict_proba1(xt)
                        if spec == shap_model and r == 0:
                            shap_sum, shap_rows = _accumulate_shap(model, xt, shap_sum, shap_rows, rng)
                    elif spec.kind == SINGLE:
                        model = _SingleFeature().fit(Xm[train], y[train])
                        oof[spec.name][r, test] = model.predict_proba1(xt)
                    else:
                        model = _logreg(settings, seed).fit(Xm[train], y[train])
                        oof[spec.name][r, test] = model.predict_proba(xt)[:, 1]
                    done += 1
                    if tick:
                        tick(done, total)
        return oof, (shap_sum, shap_rows)

    def relabelled(self, y: np.ndarray, index: int) -> np.ndarray:
        """The refit test's statistic's input for relabelling number ``index``: every model's out-of-fold scores
        (mean over the repeats), shape (n, models). Its random draws (the training subsample above
        ``max_train_rows``) come from a generator of its own, seeded by ``index``: a relabelling's scores do not
        depend on which process computes it, nor on what ran before it there."""
        o, _ = self.run(np.asarray(y).astype(int), np.random.default_rng([self.settings.seed + 13, index]))
        return np.column_stack([o[spec.name].mean(axis=0) for spec, _ in self.plan])


_REFIT: dict = {}  # a refit worker's cross-validation (set by _refit_init)


def _refit_init(cv: _CV) -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)  # one BLAS thread per process, for good (the fits run one thread each)
    _REFIT["cv"] = cv


def _refit_job(job: tuple[int, np.ndarray]) -> np.ndarray:
    index, y = job
    return _REFIT["cv"].relabelled(y, index)


class _Refit:
    """The refit permutation test's relabellings (``refit(labels)`` for
    :func:`blindcheck.analysis.permutation.refit_permutation_test`): each re-runs the whole cross-validation of
    every model, one thread per fit, as the observed run did (see :func:`run_separability`), for the first
    ``repeats`` of its repeats; ``observed`` holds the observed run's scores over those same repeats, the
    observed statistic's input (the verdict's AUCs keep every repeat). :meth:`map` spreads the relabellings over
    ``workers`` processes (spawned: xgboost's OpenMP runtime does not survive a fork once started) that each hold
    the cross-validation's arrays, one relabelling per job; with one worker they run here, in order. Each
    relabelling is computed alone (:meth:`_CV.relabelled`), so the scores, and the p-values, are the same whatever
    the number of workers."""

    def __init__(self, cv: _CV, workers: int, repeats: int, observed: np.ndarray):
        self.cv, self.workers, self.observed = cv.variant(1, repeats), max(1, workers), observed
        self.what = ""  # every repeat, as the verdict's scores: nothing to say
        if repeats < cv.repeats:
            self.what = (f"{repeats} CV repeat{'s' if repeats > 1 else ''} each, the observed statistic from the "
                         + ("check's first repeat" if repeats == 1 else f"check's first {repeats} repeats"))

    def __call__(self, y: np.ndarray) -> np.ndarray:
        return next(self.map([y]))

    def map(self, rows) -> Iterator[np.ndarray]:
        from blindcheck.runtime.executors import LOST, LocalExecutor

        rows = list(rows)
        if not rows:
            return
        workers = min(self.workers, len(rows))
        ready: dict[int, np.ndarray] = {}
        nxt = 0
        try:
            with LocalExecutor(workers, _refit_init, (self.cv,), start_method="spawn" if workers > 1 else None) as ex:
                for (index, _), scores in ex.run(_refit_job, enumerate(rows)):
                    if scores is LOST:
                        raise BlindcheckError(f"a refit worker died during relabelling {index + 1}")
                    ready[index] = scores
                    while nxt in ready:
                        yield ready.pop(nxt)
                        nxt += 1
        finally:
            _REFIT.pop("cv", None)  # one worker ran here: the arrays are not kept


def _group_counts(y: np.ndarray, groups: np.ndarray) -> dict:
    df = pd.DataFrame({"g": groups, "y": y}).groupby("g")["y"].agg(["sum", "count"])
    members_only = int((df["sum"] == df["count"]).sum())
    nonmembers_only = int((df["sum"] == 0).sum())
    return {"total": len(df), "members_only": members_only, "nonmembers_only": nonmembers_only,
            "mixed": len(df) - members_only - nonmembers_only,
            "with_members": int((df["sum"] > 0).sum()), "with_nonmembers": int((df["sum"] < df["count"]).sum())}


def _subset_finding(results: list[ModelResult], table: pd.DataFrame, cols: list[str], y: np.ndarray,
                    ids: np.ndarray, attributions: pd.DataFrame | None = None, k: int = 3) -> SubsetFinding:
    """The (model, side) that isolates the largest share of one side, the clips it isolates, and the features
    that set those clips apart from the other side."""
    fpr = permutation.FPR_TARGET
    cands = [(m.isolation_members, 0, "members", m) for m in results] + \
            [(m.isolation_nonmembers, 1, "nonmembers", m) for m in results]
    rate, _, side, m = max(cands, key=lambda c: (c[0], -c[1], -c[3].auc))
    on_side = (y == 1) if side == "members" else (y == 0)
    s = m.scores if side == "members" else -m.scores
    other = s[~on_side]
    allowed = isolation.allowed(len(other), fpr)
    # the threshold: isolated clips score above every other-side clip but the ``allowed`` highest
    isolated = on_side & (s > isolation.threshold(other, allowed))
    feats = []
    if isolated.sum() >= 2 and cols:
        for c in cols:
            v = table[c].to_numpy(dtype=float)
            a, b = v[isolated], v[~on_side]
            a, b = a[np.isfinite(a)], b[np.isfinite(b)]
            if len(a) < 2 or len(b) < 2:
                continue
            yy = np.r_[np.ones(len(a)), np.zeros(len(b))]
            auc = stats.auc(yy, np.r_[a, b])
            feats.append({"feature": c, "isolated_median": float(np.median(a)), "other_median": float(np.median(b)),
                          "auc": float(auc)})
        # features that separate equally well (to two decimals) are ranked by the combined model's attributions
        rank = {f: i for i, f in enumerate(attributions["feature"])} if attributions is not None else {}
        feats.sort(key=lambda f: (-round(abs(f["auc"] - 0.5), 2), rank.get(f["feature"], len(rank))))
    return SubsetFinding(model=m.name, side=side, rate=float(rate), n_side=int(on_side.sum()),
                         n_isolated=int(isolated.sum()), fpr=fpr, n_other=len(other), allowed=allowed,
                         ids=list(ids[isolated]), features=feats[:k])


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
    """Per group: size, clips per side and the blind AUC inside the group (where it holds both sides)."""
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
