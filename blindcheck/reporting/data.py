"""What a report reads: the result files a verb wrote. Nothing here computes a new statistic.

Optional sections (``attacks``, ``di``, ``match``) are read from ``result.json`` or from their own JSON file
next to it; a section that is missing or shaped differently is left out of the report, never an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from blindcheck.errors import BlindcheckError


@dataclass
class ReportData:
    result: dict[str, Any]
    out: Path | None = None
    scores: pd.DataFrame | None = None  # blind_scores.parquet: id, label, score.<model>, blind_score
    features: pd.DataFrame | None = None  # features.parquet
    errors: pd.DataFrame | None = None  # errors.csv
    attack_scores: pd.DataFrame | None = None  # attacks.parquet
    manifest: pd.DataFrame | None = None  # manifest.parquet: id, label, path, text, speaker, ...
    transcripts: pd.DataFrame | None = None  # transcripts.parquet
    extra: dict[str, Any] = field(default_factory=dict)  # sections read from their own JSON files

    @classmethod
    def from_dir(cls, out: str | Path) -> ReportData:
        outp = Path(out)
        path = outp / "result.json"
        if not path.is_file():
            raise BlindcheckError(f"{outp}: no result.json here; run `blindcheck check --out {outp}` first")
        try:
            result = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BlindcheckError(f"{path}: cannot read: {exc}") from exc
        if not isinstance(result, dict) or not str(result.get("schema", "")).startswith("blindcheck.result/"):
            raise BlindcheckError(f"{path}: not a blindcheck result (schema blindcheck.result/1 expected)")
        extra = {}
        for name in ("attacks", "di", "match"):
            f = outp / f"{name}.json"
            if f.is_file():
                try:
                    extra[name] = json.loads(f.read_text(encoding="utf-8"))
                except ValueError as exc:
                    raise BlindcheckError(f"{f}: cannot read: {exc}") from exc
        return cls(result=result, out=outp, scores=_parquet(outp / "blind_scores.parquet"),
                   features=_parquet(outp / "features.parquet"), errors=_csv(outp / "errors.csv"),
                   attack_scores=_parquet(outp / "attacks.parquet"), manifest=_parquet(outp / "manifest.parquet"),
                   transcripts=_parquet(outp / "transcripts.parquet"), extra=extra)

    def section(self, name: str) -> Any:
        """An optional section from result.json, else from its own file (``name.json``), else None; the
        ``di`` and ``match`` sections as the verbs write them are read into the renderers' shape (see
        :func:`_di_view` and :func:`_match_view`)."""
        value = self.result.get(name)
        if value is None:
            value = self.extra.get(name)
            if isinstance(value, dict) and name in value and len(value) <= 3:  # {"attacks": [...], ...}
                value = value[name]
        if name == "di" and isinstance(value, dict) and "attack" in value:
            return _di_view(value)
        if name == "match" and isinstance(value, dict) and "parts" in value:
            return _match_view(value, self.extra.get("match"))
        return value


def _di_view(di: dict) -> dict:
    """``blindcheck di``'s section (``attack`` and ``blind`` scorers, each with its rejection ``curve`` and
    ``n_min``) as the report's rows and curves."""
    scorers = [s for s in (di.get("attack"), di.get("blind")) if isinstance(s, dict)]
    return {**di, "curves": {str(s.get("name")): s.get("curve") or [] for s in scorers},
            "minimal_n": {str(s.get("name")): s.get("n_min") for s in scorers},
            "status": "explainable without the model" if di.get("explainable_without_model") else None}


def _match_view(section: dict, full: dict | None) -> dict:
    """``blindcheck match``'s record (``match.json``, or the ``match`` section ``check --match`` adds to
    result.json) as the report's view of its first part: method, fresh AUC, retained counts and the balance
    table (from match.json, which holds it)."""
    parts = section.get("parts") or []
    part = parts[0] if parts and isinstance(parts[0], dict) else {}
    res = part.get("result") or {}
    fresh = part.get("fresh") or res.get("fresh_check") or {}
    retained = part.get("retained") or res.get("retained") or {}
    full_parts = (full or {}).get("parts") or []
    balance = part.get("balance") or (full_parts[0].get("balance") if full_parts and
                                      isinstance(full_parts[0], dict) else None) or []
    return {"status": section.get("status", ""), "method": part.get("method") or res.get("method") or "",
            "before": section.get("before") or {}, "after": fresh,
            "retained": {k: retained[k] for k in ("members", "nonmembers") if k in retained},
            "balance": [{**b, "variance_ratio": b.get("variance_ratio_after")} for b in balance
                        if isinstance(b, dict)],
            "reasons": [str(r) for r in part.get("reasons") or []],
            "manifest": "matched.csv" if part.get("success") else None}


def _parquet(path: Path) -> pd.DataFrame | None:
    return pd.read_parquet(path) if path.is_file() else None


def _csv(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        return None
