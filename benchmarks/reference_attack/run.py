"""A genuine membership-inference attack on a small speech model, checked against the blind baseline.

The target model is a compact MLP digit classifier on log-mel spectrograms (torch, CPU), trained to overfit on
the *member* clips of two splits of the bundled FSDD subset (480 clips, 6 speakers, 10 digits):

(a) **speaker-confounded**: members are every clip of three speakers, non-members every clip of the other three
    (the shape of many published audio MIA benchmarks: members and non-members from different sources);
(b) **matched**: the same six speakers on both sides, clips assigned at random (stratified by speaker and digit).

Two real attacks give per-clip scores:

- ``mia_loss``: the target's cross-entropy on the clip's true digit (lower = member; Yeom et al. 2018);
- ``mia_ref_loss``: the loss calibrated by reference models (Watson et al. 2022, "difficulty calibration"):
  target loss minus the mean loss of reference models trained with the same recipe on random halves of the
  attacker's population data (here: the whole pool), each clip scored only by the reference models that did not
  train on it (two complementary halves per partition, so every clip is held out by half of them).

Each split then goes through ``blindcheck.correlate`` (blind check on recording, spectral and prosodic features;
attack vs blind) and ``dataset_inference`` (Welch one-sided, minimal n per side), and one table is printed and
written to ``reports/reference_attack/table.md`` and ``table.json``.

    python benchmarks/reference_attack/run.py [--epochs 80] [--refs 4] [--repeats 2] [--cache DIR]
                                              [--out reports/reference_attack]
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "fsdd"
SR, N_FFT, HOP, MELS, FRAMES = 8000, 256, 80, 40, 64


@functools.cache
def mel_bank() -> np.ndarray:
    import librosa

    return librosa.filters.mel(sr=SR, n_fft=N_FFT, n_mels=MELS)


def log_mel(path: str) -> np.ndarray:
    """(MELS, FRAMES) log-mel spectrogram, cropped or zero-padded around the clip's centre."""
    import librosa

    x, sr = sf.read(path, dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    if sr != SR:
        x = librosa.resample(x, orig_sr=sr, target_sr=SR)
    pad = N_FFT // 2
    x = np.pad(x, (pad, pad))
    frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT)[::HOP] * np.hanning(N_FFT)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    mel = mel_bank() @ power.T
    lm = np.log(mel + 1e-6)
    t = lm.shape[1]
    if t >= FRAMES:
        s = (t - FRAMES) // 2
        return lm[:, s:s + FRAMES]
    out = np.full((MELS, FRAMES), np.log(1e-6))
    s = (FRAMES - t) // 2
    out[:, s:s + t] = lm
    return out


def make_model(seed: int):
    """An MLP on the log-mel image pooled to 40 bands x 16 time steps (640 inputs): small enough to train in
    about a second on a CPU, large enough (82k weights for 240 clips) to memorise its training set."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(nn.AvgPool2d((1, FRAMES // 16)), nn.Flatten(), nn.Linear(MELS * 16, 128), nn.ReLU(),
                         nn.Linear(128, 10))


def train(X: np.ndarray, y: np.ndarray, epochs: int, seed: int):
    """Train to overfit: Adam, no regularisation, no augmentation."""
    import torch

    model = make_model(seed)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    xt, yt = torch.tensor(X[:, None], dtype=torch.float32), torch.tensor(y, dtype=torch.long)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(yt), generator=g).split(64):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
    return model


def losses(model, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    import torch

    model.eval()
    with torch.no_grad():
        logits = model(torch.tensor(X[:, None], dtype=torch.float32))
        return torch.nn.functional.cross_entropy(logits, torch.tensor(y, dtype=torch.long),
                                                 reduction="none").numpy().astype(float)


def reference_losses(X: np.ndarray, y: np.ndarray, refs: int, epochs: int, seed: int) -> np.ndarray:
    """Mean held-out loss per clip over ``refs`` reference models (refs/2 random partitions into two halves,
    one model per half; each clip is scored by the models that did not see it)."""
    rng = np.random.default_rng(seed)
    total, count = np.zeros(len(y)), np.zeros(len(y))
    for p in range(refs // 2):
        perm = rng.permutation(len(y))
        halves = (perm[: len(y) // 2], perm[len(y) // 2:])
        for h in (0, 1):
            model = train(X[halves[h]], y[halves[h]], epochs, seed=1000 + 2 * p + h)
            held = halves[1 - h]
            total[held] += losses(model, X[held], y[held])
            count[held] += 1
    return total / count


def splits(meta: pd.DataFrame, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    speakers = sorted(meta["speaker"].unique())
    confounded = meta["speaker"].isin(speakers[::2]).to_numpy().astype(int)
    matched = np.zeros(len(meta), int)
    for _, idx in meta.groupby(["speaker", "digit"]).indices.items():
        matched[rng.permutation(idx)[: len(idx) // 2]] = 1
    return {"speaker-confounded": confounded, "matched (same speakers)": matched}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=80)
    ap.add_argument("--repeats", type=int, default=2, help="CV repeats of the blind check")
    ap.add_argument("--refs", type=int, default=4, help="reference models (even)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", default="/tmp/blindcheck_reference_attack_cache", help="feature cache")
    ap.add_argument("--out", default=str(ROOT / "reports" / "reference_attack"))
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)

    import torch

    import blindcheck
    from blindcheck.analysis.inference import dataset_inference
    from blindcheck.settings import Settings

    torch.set_num_threads(1)  # tiny matrices: more threads only contend
    t0 = time.time()
    meta = pd.read_csv(DATA / "metadata.csv")
    meta["abspath"] = [str(DATA / p) for p in meta["path"]]
    X = np.stack([log_mel(p) for p in meta["abspath"]])
    X = (X - X.mean()) / X.std()
    y_digit = meta["digit"].to_numpy()
    t_feat = time.time() - t0
    ref = reference_losses(X, y_digit, args.refs, args.epochs, args.seed)
    t_ref = time.time() - t0 - t_feat
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = Settings(seed=args.seed, repeats=args.repeats)
    print(f"log-mel {t_feat:.0f} s, {args.refs} reference models {t_ref:.0f} s", file=sys.stderr)
    rows = []
    for split_name, label in splits(meta, args.seed).items():
        members = np.nonzero(label == 1)[0]
        target = train(X[members], y_digit[members], args.epochs, seed=args.seed)
        loss = losses(target, X, y_digit)
        train_acc = float((loss[members] < np.log(2)).mean())
        print(f"{split_name}: target trained ({time.time() - t0:.0f} s), blind check and attacks ...", file=sys.stderr)
        scores = pd.DataFrame({"id": meta["id"], "mia_loss": loss, "mia_ref_loss": loss - ref})
        manifest = pd.DataFrame({"id": meta["id"], "path": meta["abspath"], "label": label,
                                 "speaker": meta["speaker"]})
        with tempfile.TemporaryDirectory() as tmp:
            mpath = Path(tmp) / "manifest.csv"
            manifest.to_csv(mpath, index=False)
            corr = blindcheck.correlate(mpath, scores, lower_is_member=["mia_loss", "mia_ref_loss"],
                                        cache_dir=args.cache, modalities=["recording", "spectral", "prosodic"],
                                        workers=args.workers, settings=settings)
        sep = corr.check.separability
        by_id = scores.set_index("id").loc[sep.ids]
        for a in corr.attacks:
            di = dataset_inference({a.name: by_id[a.name].to_numpy()}, sep.labels, settings,
                                   blind_scores={b.name: b.scores for b in sep.models},
                                   lower_is_member=[a.name])
            m = a.metrics
            rows.append({
                "split": split_name, "attack": a.name, "target_train_fit": train_acc,
                "auc": m["auc"], "auc_ci": [m["ci_low"], m["ci_high"]], "tpr_at_1pct_fpr": m["tpr_at_1pct_fpr"],
                "blind_verdict": corr.check.verdict.status, "blind_model": corr.blind_model,
                "blind_auc": m["blind_auc"], "delong_p": m["delong_p"], "spearman": m["spearman"],
                "spearman_ci": [m["spearman_ci_low"], m["spearman_ci_high"]], "residual_auc": m["residual_auc"],
                "residual_ci": [m["residual_ci_low"], m["residual_ci_high"]], "stratified_auc": m["stratified_auc"],
                "status": a.status, "di_n_attack": di.attack.n_min, "di_n_blind": di.blind.n_min,
                "di_explainable_without_model": di.explainable_without_model,
            })
    table = format_table(rows)
    seconds = time.time() - t0
    print(table)
    print(f"\n{seconds:.0f} s in all (log-mel {t_feat:.0f} s, {args.refs} reference models {t_ref:.0f} s)")
    (out / "table.md").write_text(
        "# Reference attack vs blind baseline (FSDD, 480 clips)\n\n"
        f"Produced by `python benchmarks/reference_attack/run.py` ({args.epochs} epochs, {args.refs} reference "
        f"models, seed {args.seed}, {seconds:.0f} s on CPU).\n\n" + table + "\n", encoding="utf-8")
    (out / "table.json").write_text(json.dumps({"epochs": args.epochs, "refs": args.refs, "seed": args.seed,
                                                "seconds": round(seconds, 1), "rows": rows}, indent=2,
                                               default=float), encoding="utf-8")
    return 0


def format_table(rows: list[dict]) -> str:
    def n(v):
        return "—" if v is None else str(v)

    lines = ["| split | attack | attack AUC [95% CI] | TPR@1%FPR | blind AUC | ρ (Spearman) | residual AUC [95% CI] "
             "| status | DI n attack | DI n blind |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['split']} | {r['attack']} | {r['auc']:.3f} [{r['auc_ci'][0]:.3f}, {r['auc_ci'][1]:.3f}] "
                     f"| {100 * r['tpr_at_1pct_fpr']:.1f}% | {r['blind_auc']:.3f} ({r['blind_verdict']}) "
                     f"| {r['spearman']:.2f} | {r['residual_auc']:.3f} [{r['residual_ci'][0]:.3f}, "
                     f"{r['residual_ci'][1]:.3f}] | {r['status']} | {n(r['di_n_attack'])} | {n(r['di_n_blind'])} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
