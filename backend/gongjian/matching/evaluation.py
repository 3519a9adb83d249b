"""Quality of a ranking against graded labels (precision@k, recall@k, nDCG@k).

Used by the quality test and `make bench`; it reads the interchange format directly so the
figures can be computed for any labeled file without a database.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from gongjian.matching.engine import Matcher, NeedInput, ResourceInput


def _point(item: Mapping[str, Any]) -> tuple[float | None, float | None]:
    loc = item.get("location") or {}
    return loc.get("lat"), loc.get("lng")


def need_input(item: Mapping[str, Any]) -> NeedInput:
    lat, lng = _point(item)
    return NeedInput(
        key=item["ref"],
        category=item["category"],
        title=item["title"],
        description=item.get("description", ""),
        wanted_from=date.fromisoformat(item["wanted"]["from"]),
        wanted_to=date.fromisoformat(item["wanted"]["to"]),
        lat=lat,
        lng=lng,
        beneficiaries=int(item.get("beneficiaries") or 1),
    )


def resource_input(item: Mapping[str, Any]) -> ResourceInput:
    lat, lng = _point(item)
    return ResourceInput(
        key=item["ref"],
        category=item["category"],
        title=item["title"],
        description=item.get("description", ""),
        available_from=date.fromisoformat(item["available"]["from"]),
        available_to=date.fromisoformat(item["available"]["to"]),
        lat=lat,
        lng=lng,
        serves_radius_km=item.get("serves_radius_km"),
        remaining_quantity=int(item.get("quantity") or 0),
    )


def metrics(
    ranked: Mapping[str, Sequence[str]], gold: Sequence[Mapping[str, Any]], k: int = 5
) -> dict[str, float]:
    """Mean precision@k, recall@k and nDCG@k (gain = grade) over the needs that have labels."""
    grades: dict[str, dict[str, int]] = {}
    for g in gold:
        if g.get("grade", 0) > 0:
            grades.setdefault(g["need_ref"], {})[g["resource_ref"]] = int(g["grade"])
    precision = recall = ndcg = 0.0
    for need, relevant in grades.items():
        top = list(ranked.get(need, []))[:k]
        hits = [r for r in top if r in relevant]
        precision += len(hits) / k
        recall += len(hits) / min(len(relevant), k)
        dcg = sum(relevant.get(r, 0) / math.log2(i + 2) for i, r in enumerate(top))
        ideal = sum(g / math.log2(i + 2) for i, g in enumerate(sorted(relevant.values(), reverse=True)[:k]))
        ndcg += dcg / ideal
    n = max(len(grades), 1)
    unlabeled = [need for need in ranked if need not in grades]
    return {
        "precision_at_k": round(precision / n, 4),
        "recall_at_k": round(recall / n, 4),
        "ndcg_at_k": round(ndcg / n, 4),
        "labeled_needs": len(grades),
        "unlabeled_needs_with_suggestions": sum(1 for need in unlabeled if ranked[need]),
        "k": k,
    }


def evaluate(data: Mapping[str, Any], k: int = 5) -> dict[str, float]:
    matcher = Matcher([resource_input(r) for r in data["resources"]])
    needs = [need_input(n) for n in data["needs"]]
    results = matcher.rank(needs, limit=k)
    ranked = {str(n.key): [str(m.resource_key) for m in ms] for n, ms in zip(needs, results, strict=True)}
    return metrics(ranked, data.get("gold", []), k)
