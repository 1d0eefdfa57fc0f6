"""fits.json: every number of the report in machine-readable form.

Layout: {"schema": 2, "error": ..., "sections": {"<task>/<domain>": {metric, targets, default_target,
keys: {<key>: {fit, why, holdout, holdout_note, smallest_n_beating, beating_note}},
pairs: {"<A>_vs_<B>": {exponent_ratio, data_multiplier, crossings, crossings_extrapolated, notes}}}},
"audit": {...}}. JSON has no NaN or infinity: NaN is written as null, ±∞ as the strings "inf" / "-inf".
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict

import numpy as np

from radscale.report.analysis import SectionAnalysis
from radscale.report.audit import Audit
from radscale.scaling.fit import HoldoutResult


def _clean(v):
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_clean(x) for x in v]
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        x = float(v)
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf") if math.isinf(x) else x
    return v


def _holdout(h: HoldoutResult | None) -> dict | None:
    if h is None:
        return None
    return {"n_holdout": h.n_holdout, "observed": h.observed, "predicted": h.predicted, "abs_error": h.abs_error,
            "rel_error": h.rel_error, "band": h.band, "curve_band": h.curve_band, "inside_band": h.inside_band,
            "fit": h.fit.to_dict(), "describe": h.describe()}


def _result(x) -> dict | None:
    return None if x is None else {**asdict(x), "describe": x.describe()}


def section_dict(sec: SectionAnalysis) -> dict:
    keys = {k: {"fit": None if ka.fit is None else ka.fit.to_dict(), "why": ka.why,
                "holdout": _holdout(ka.holdout), "holdout_note": ka.holdout_note,
                "smallest_n_beating": _result(ka.beating), "beating_note": ka.beating_note}
            for k, ka in sec.keys.items()}
    pairs = {f"{p.names[0]}_vs_{p.names[1]}": {
        "exponent_ratio": _result(p.ratio), "data_multiplier": _result(p.multiplier),
        "crossings": _result(p.crossings), "crossings_extrapolated": _result(p.crossings_ext),
        "notes": list(p.notes)} for p in sec.pairs}
    return {"metric": sec.metric, "error": f"1 - {sec.metric}", "targets": sec.targets,
            "default_target": sec.default_target, "keys": keys, "pairs": pairs}


def fits_json(sections: list[SectionAnalysis], audit: Audit | None) -> str:
    doc = {"schema": 2, "form": "power: e = a * N^(-alpha), e = 1 - headline metric",
           "sections": {f"{s.task}/{s.domain}": section_dict(s) for s in sections},
           "audit": None if audit is None else {**asdict(audit), "flagged": [t.trial_id for t in audit.flagged]}}
    return json.dumps(_clean(doc), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
