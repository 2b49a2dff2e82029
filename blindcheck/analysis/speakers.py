"""Who speaks on which side: speakers inferred from the voice embeddings, and the speaker overlap of a split.

:func:`infer_speakers` clusters the ``voice.*`` embeddings into ``voice_cluster`` labels, the number of
clusters chosen from the data: the embeddings are centred on their mean and L2-normed (GE2E embeddings are
non-negative, so raw cosine similarities all crowd near 1), grouped by average-linkage agglomerative
clustering on cosine distance (scikit-learn) cut at ``threshold``, and the groups refined by k-means started
from their centroids. The threshold (default :data:`DEFAULT_THRESHOLD`) was validated on the bundled speech (see
``benchmarks/voice_speed.py`` and ``tests/features/test_voice.py``). Clips without an embedding (too short, silent,
noise) get no cluster (``""``): for grouped folds each becomes a group of its own.

:func:`speaker_overlap` counts the speakers (given, or inferred) that appear on both sides, only among members
and only among non-members, and the share of clips whose speaker lies on one side only. A speaker-disjoint
split lets membership follow from who speaks.
"""

from __future__ import annotations

import math

import numpy as np

from blindcheck.analysis.metadata import auc_within_ties, cross_fitted_share

DEFAULT_THRESHOLD = 0.90  # cosine distance between centred embeddings at which clusters stop merging
INFERRED_MIN_SHARE = 0.15  # an inferred speaker is on both sides when each holds more than this share of it


def infer_speakers(emb: np.ndarray, threshold: float = DEFAULT_THRESHOLD, seed: int = 0) -> np.ndarray:
    """Cluster labels (``"v01"``, ``"v02"``, ... by cluster size; ``""`` where a row has NaN), shape (n,).

    ``emb``: shape (n, d) speaker embeddings, rows with NaN left out of the clustering."""
    emb = np.asarray(emb, dtype=float)
    ok = np.isfinite(emb).all(axis=1)
    labels = np.full(len(emb), "", dtype=object)
    if ok.sum() == 0:
        return labels
    if ok.sum() == 1:
        labels[ok] = "v01"
        return labels
    z = emb[ok] - emb[ok].mean(axis=0)
    z /= np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    from sklearn.cluster import AgglomerativeClustering, KMeans

    raw = AgglomerativeClustering(n_clusters=None, distance_threshold=threshold, metric="cosine",
                                  linkage="average").fit_predict(z)
    k = len(np.unique(raw))
    if 1 < k < len(z):
        centres = np.stack([z[raw == c].mean(axis=0) for c in range(k)])
        raw = KMeans(n_clusters=k, init=centres, n_init=1, random_state=seed).fit_predict(z)
    ids, counts = np.unique(raw, return_counts=True)
    order = ids[np.lexsort((ids, -counts))]
    width = max(2, len(str(len(order))))
    names = {c: f"v{i + 1:0{width}d}" for i, c in enumerate(order)}
    labels[ok] = [names[c] for c in raw]
    return labels


def adjusted_rand(given: np.ndarray, inferred: np.ndarray) -> float:
    """Agreement of the inferred clusters with the given speakers, over clips that have a cluster."""
    from sklearn.metrics import adjusted_rand_score

    inferred = np.asarray(inferred, dtype=object)
    ok = inferred != ""
    if ok.sum() < 2:
        return math.nan
    return float(adjusted_rand_score(np.asarray(given, dtype=str)[ok], inferred[ok].astype(str)))


def speaker_overlap(speakers: np.ndarray, labels: np.ndarray, min_share: float = 0.0) -> dict:
    """Speakers per side: ``total``, ``shared`` (on both sides), ``members_only``, ``nonmembers_only``, the
    clips whose speaker is on one side only (``clips_one_side``, ``share_clips_one_side``), ``unassigned``
    clips (no speaker known) and ``disjoint`` (no speaker on both sides, each side has one).

    A speaker counts as on both sides when each side holds more than ``min_share`` of its clips (0 for given
    speakers; :data:`INFERRED_MIN_SHARE` for inferred ones, whose clusters hold a few clips of other voices); a
    speaker is then on the side that holds most of its clips."""
    spk = np.asarray(speakers, dtype=object)
    y = np.asarray(labels).astype(int)
    known = np.array([s is not None and str(s) != "" and str(s) != "nan" for s in spk])
    spk_k, y_k = spk[known].astype(str), y[known]
    names, inv = np.unique(spk_k, return_inverse=True)
    n = np.bincount(inv, minlength=len(names))
    frac = np.bincount(inv, weights=y_k, minlength=len(names)) / np.maximum(n, 1)
    shared = (frac > min_share) & (1 - frac > min_share)
    members_only = ~shared & (frac >= 0.5)
    nonmembers_only = ~shared & (frac < 0.5)
    one_side = ~shared[inv]
    return {
        "total": len(names), "shared": int(shared.sum()), "members_only": int(members_only.sum()),
        "nonmembers_only": int(nonmembers_only.sum()), "clips": int(known.sum()),
        "clips_one_side": int(one_side.sum()),
        "share_clips_one_side": float(one_side.mean()) if known.any() else math.nan,
        "unassigned": int((~known).sum()), "min_share": min_share,
        "disjoint": bool(members_only.any() and nonmembers_only.any() and not shared.any()),
    }


def speaker_report(feats, meta, settings) -> dict | None:
    """The ``speakers`` section of ``result.json``: inferred clusters (written into ``feats["voice_cluster"]``
    when the table has ``voice.*`` columns), the speaker overlap between the sides — of the manifest's
    ``speaker`` column where it has one, else of the inferred speakers — and their agreement (ARI)."""
    emb_cols = [c for c in feats.columns if c.startswith("voice.emb_")]
    labels = feats["label"].to_numpy()
    inferred = None
    out: dict = {}
    if emb_cols:
        inferred = infer_speakers(feats[emb_cols].to_numpy(dtype=float), settings.voice_cluster_threshold,
                                  settings.seed)
        feats["voice_cluster"] = inferred
        out["inferred"] = {"clusters": len(set(inferred) - {""}), "threshold": settings.voice_cluster_threshold,
                           "unclustered": int((inferred == "").sum()),
                           **speaker_overlap(inferred, labels, INFERRED_MIN_SHARE)}
    given = None
    if "speaker" in meta.columns:
        given = meta["speaker"].to_numpy(dtype=object)
        given = np.array(["" if g is None or (isinstance(g, float) and math.isnan(g)) else str(g) for g in given],
                         dtype=object)
        if not (given != "").any():
            given = None
    if given is not None:
        out["given"] = speaker_overlap(given, labels)
        if inferred is not None:
            out["inferred"]["ari_vs_given"] = adjusted_rand(given, inferred)
    if not out:
        return None
    out["source"] = "given" if given is not None else "inferred"
    out["overlap"] = out[out["source"]]
    out["separability"] = speaker_separability(given if given is not None else inferred, labels, settings.alpha,
                                               settings.folds, settings.seed)
    return out




def speaker_separability(speakers: np.ndarray, labels: np.ndarray, alpha: float, folds: int = 5,
                         seed: int = 0, permutations: int = 199) -> dict | None:
    """How well *who speaks* alone tells the sides apart: each clip scored by the member share of its speaker
    among the clips of the other folds (stratified k-fold over clips; a speaker unseen in training gets the
    overall share), its AUC with a DeLong interval and the one-sided lower bound at ``1 - alpha``. The predictor
    is constant within a speaker, so two clips of one speaker count as a tie: their cross-fitted scores differ
    only by which fold held them, and that difference anti-learns (a member in the test fold lowers its
    speaker's training share), which cost ~0.06 AUC on a 70:30 mix. A speaker mix
    of 70:30 against 30:70 has a Bayes AUC of 0.70 here, whatever the acoustic models make of the voices."""
    from blindcheck.analysis import stats

    spk = np.asarray(speakers, dtype=object).astype(str)
    y = np.asarray(labels).astype(int)
    known = (spk != "") & (spk != "nan") & (spk != "None")
    if known.sum() < 4 or len(np.unique(y[known])) < 2:
        return None
    s_k, y_k = spk[known], y[known]
    k = min(folds, int(np.bincount(y_k).min()))
    if k < 2:
        return None
    codes = np.unique(s_k, return_inverse=True)[1]

    def cross_fitted(yy: np.ndarray, seed_: int) -> np.ndarray:
        return cross_fitted_share(codes, yy, k, seed_)

    a, se = auc_within_ties(y_k, cross_fitted(y_k, seed), codes)
    # The clips of a speaker share one score, so clip-level DeLong errors run small (on random splits of the
    # bundled speech 15% of p-values fell below 0.05): the p-value comes from relabelling clips, and the
    # standard error is at least the spread of the AUC over those relabellings.
    rng = np.random.default_rng(seed + 17)
    null = np.array([auc_within_ties(yp, cross_fitted(yp, seed), codes)[0]
                     for yp in (rng.permutation(y_k) for _ in range(permutations))])
    p = float((1 + np.sum(null >= a - 1e-12)) / (permutations + 1))
    se = max(se, float(null.std(ddof=1))) if math.isfinite(se) else float(null.std(ddof=1))
    lower = a - stats.quantile(1 - alpha) * se
    return {"auc": float(a), "se": float(se), "lower_bound": float(lower), "p": p, "clips": int(known.sum()),
            "folds": k, "permutations": permutations}
