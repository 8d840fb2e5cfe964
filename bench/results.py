"""A run's results (:class:`Run`) and their JSON form (``--json``, ``--render-from``)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import peers
import shapes
import targets as targets_mod
from breakdown import Row
from measure import Case
from measure import Results
from measure import Settings
from measure import overhead
from measure import scenario_for


@dataclass
class Run:
    """Everything a report is made of."""

    results: Results
    info: dict[str, str]
    settings: Settings
    quick: bool
    elapsed: float
    targets: list[targets_mod.Target]
    curves: dict[str, Results] = field(default_factory=dict)
    config: Results = field(default_factory=dict)
    profile: dict[str, list[Row]] = field(default_factory=dict)
    end_load: str = ""


def _case_json(results: Results, key: str, name: str, c: Case) -> dict[str, Any]:
    return {
        "na": c.na,
        "note": c.note,
        "floor": c.is_floor,
        "extra": c.extra,
        "median_us": c.median if c.round_means else None,
        "overhead_us": overhead(results, key, name),
        "cpu_median_us": c.cpu_median if c.cpu_round_means else None,
        "cpu_overhead_us": overhead(results, key, name, cpu=True),
        "round_means_us": c.round_means,
        "cpu_round_means_us": c.cpu_round_means,
        "per_request_median_us": statistics.median(c.samples) if c.samples else None,
        "requests_per_round": c.requests,
        "counts": c.counts,
        "parts_us": {k: c.part(k) for k in c.parts},
    }


def results_json(results: Results) -> dict[str, Any]:
    return {
        key: {name: _case_json(results, key, name, c) for name, c in cases.items()}
        for key, cases in results.items()
    }


def results_from_json(data: dict[str, Any]) -> Results:
    results: Results = {}
    for key, cases in data.items():
        scenario = scenario_for(key)
        results[key] = {}
        for name, c in cases.items():
            case = Case(name, scenario, na=c["na"], note=c["note"], extra=c.get("extra") or {})
            if not c.get("floor", name.startswith("floor_") or name == "inflate"):
                # a stand-in layer: only ``is_floor`` (layer is None) matters after a run
                case.layer = peers.Layer(name, lambda *a: None)
            case.requests = c.get("requests_per_round", 0)
            case.round_means = list(c["round_means_us"])
            case.cpu_round_means = list(c.get("cpu_round_means_us") or [])
            case.counts = c["counts"]
            case.parts = {k: [v] for k, v in (c.get("parts_us") or {}).items()}
            results[key][name] = case
    return results


def to_json(run: Run) -> dict[str, Any]:
    return {
        "info": run.info,
        "run": {
            "settings": run.settings.__dict__,
            "quick": run.quick,
            "elapsed": run.elapsed,
            "end_load": run.end_load,
        },
        "shapes": {
            key: {
                "pickled_bytes": shapes.pickled_size(key),
                "keys": len(shapes.data(key)),
                "zlib_ratio": shapes.compress_ratio(key),
            }
            for key in shapes.SHAPES
        },
        "scenarios": results_json(run.results),
        "curves": {family: results_json(r) for family, r in run.curves.items()},
        "config_check": results_json(run.config),
        "breakdown": {
            key: [
                {"function": r[0], "depth": r[1], "calls": r[2], "cpu_us": r[3], "wall_us": r[4]}
                for r in rows
            ]
            for key, rows in run.profile.items()
        },
        "targets": targets_mod.to_json(run.targets),
        "documented_counts": [
            {"cache": c, "documented": w, "as_documented": ok, "counted": t}
            for c, w, ok, t in targets_mod.documented_checks(run.results)
        ],
    }


def from_json(data: dict[str, Any]) -> Run:
    results = results_from_json(data["scenarios"])
    meta = data.get("run") or {}
    settings = Settings(**meta["settings"]) if meta.get("settings") else Settings()
    return Run(
        results=results,
        info=data["info"],
        settings=settings,
        quick=bool(meta.get("quick")),
        elapsed=float(meta.get("elapsed", float("nan"))),
        targets=targets_mod.evaluate(results),
        curves={f: results_from_json(r) for f, r in (data.get("curves") or {}).items()},
        config=results_from_json(data.get("config_check") or {}),
        profile={
            key: [(r["function"], r["depth"], r["calls"], r["cpu_us"], r["wall_us"]) for r in rows]
            for key, rows in (data.get("breakdown") or {}).items()
        },
        end_load=str(meta.get("end_load", "")),
    )
