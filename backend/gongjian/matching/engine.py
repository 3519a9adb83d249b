"""The matching engine: for each need, the resources that can serve it, best first.

How a need is read against a resource, in order:
1. Hard constraints, never relaxed: the resource is usable (not withdrawn, something left),
   its availability window overlaps the wanted window, and the need lies within its
   service radius (haversine). A resource failing one is never suggested.
2. Text relevance: BM25 over the words of both texts (jieba, domain dictionary) plus the
   domain concepts they speak of (`lexicon.CONCEPTS`), so 吃饭难 meets 助餐 and 四点半课堂
   meets 课后作业辅导 although no word is shared. Computed for a whole batch of needs at
   once as one sparse matrix product, which is what makes a county-wide run fast.
3. A community worker's corrections on the best few: category fit, what the resource says
   it does not offer (只借物料，不做咨询), a need that wants to learn from a resource that
   does not teach, a venue too small for the people who need it.
4. Scores below `WEAK_BELOW` are weak: returned only when asked, and marked.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
from scipy import sparse

from gongjian.matching.lexicon import AUDIENCE_CONCEPTS, CATEGORY_FIT, CATEGORY_LABELS, CONCEPTS
from gongjian.matching.text import Reading, read

EARTH_RADIUS_KM = 6371.0
K1 = 1.2
B = 0.75
CONCEPT_WEIGHT = 3.0
AUDIENCE_WEIGHT = 0.75
RERANK_DEPTH = 20
HEADLINE_BOOST = 1.5  # a concept in the title is what the text is mainly about
WEAK_BELOW = 0.12
BATCH = 128


@dataclass(frozen=True)
class NeedInput:
    key: Hashable
    category: str
    title: str
    description: str
    wanted_from: date
    wanted_to: date
    lat: float | None
    lng: float | None
    beneficiaries: int = 1


@dataclass(frozen=True)
class ResourceInput:
    key: Hashable
    category: str
    title: str
    description: str
    available_from: date
    available_to: date
    lat: float | None
    lng: float | None
    serves_radius_km: float | None
    remaining_quantity: int
    usable: bool = True  # not withdrawn


@dataclass
class Match:
    resource_key: Hashable
    score: float
    weak: bool
    explanation: dict[str, Any] = field(default_factory=dict)
    resource_index: int = -1
    notes: list[str] = field(default_factory=list)


def haversine_km(lat1: Any, lng1: Any, lat2: Any, lng2: Any) -> Any:
    """Great-circle distance; works on floats and numpy arrays alike."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dphi = p2 - p1
    dlmb = np.radians(lng2) - np.radians(lng1)
    a = np.sin(dphi / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlmb / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.minimum(a, 1.0)))


def _concept_weight(concept: str) -> float:
    return AUDIENCE_WEIGHT if concept in AUDIENCE_CONCEPTS else CONCEPT_WEIGHT


def _features(reading: Reading) -> dict[str, float]:
    feats: dict[str, float] = {}
    for w in reading.words:
        feats[w] = feats.get(w, 0.0) + 1.0
    for c in reading.concepts:
        feats["@" + c] = _concept_weight(c) * (HEADLINE_BOOST if c in reading.headline else 1.0)
    return feats


class Matcher:
    """An index of resources to rank needs against. Build once per run; `rank` is batched."""

    def __init__(self, resources: Sequence[ResourceInput]) -> None:
        self.resources = list(resources)
        self.readings = [read(r.title, r.description, is_need=False) for r in self.resources]
        self.vocab: dict[str, int] = {}
        rows: list[int] = []
        cols: list[int] = []
        tfs: list[float] = []
        lengths = np.zeros(len(self.resources))
        for i, reading in enumerate(self.readings):
            feats = _features(reading)
            lengths[i] = sum(feats.values())
            for term, tf in feats.items():
                rows.append(i)
                cols.append(self.vocab.setdefault(term, len(self.vocab)))
                tfs.append(tf)
        n = max(len(self.resources), 1)
        tf_matrix = sparse.csr_matrix((tfs, (rows, cols)), shape=(len(self.resources), len(self.vocab)))
        df = np.bincount(np.asarray(cols, dtype=np.int64), minlength=len(self.vocab))
        self.idf = np.log(1.0 + (n - df + 0.5) / (df + 0.5))
        avgdl = float(lengths.mean()) if len(lengths) else 1.0
        coo = tf_matrix.tocoo()
        norm = K1 * (1 - B + B * lengths[coo.row] / max(avgdl, 1e-9))
        weights = self.idf[coo.col] * coo.data * (K1 + 1) / (coo.data + norm)
        # terms × resources, so a batch of queries multiplies straight into it
        self.doc_weights = sparse.csr_matrix((weights, (coo.col, coo.row)), shape=tf_matrix.shape[::-1])
        self._r_from = np.array([r.available_from.toordinal() for r in self.resources], dtype=np.int64)
        self._r_to = np.array([r.available_to.toordinal() for r in self.resources], dtype=np.int64)
        self._r_lat = np.array([np.nan if r.lat is None else r.lat for r in self.resources], dtype=float)
        self._r_lng = np.array([np.nan if r.lng is None else r.lng for r in self.resources], dtype=float)
        self._r_radius = np.array(
            [np.inf if r.serves_radius_km is None else r.serves_radius_km for r in self.resources],
            dtype=float,
        )
        self._r_usable = np.array([r.usable and r.remaining_quantity > 0 for r in self.resources], dtype=bool)

    # -- ranking -------------------------------------------------------------------------------

    def rank(
        self, needs: Sequence[NeedInput], limit: int = 5, *, include_weak: bool = False
    ) -> list[list[Match]]:
        results: list[list[Match]] = []
        for start in range(0, len(needs), BATCH):
            results.extend(self._rank_batch(needs[start : start + BATCH], limit, include_weak))
        return results

    def _query(self, readings: list[Reading]) -> tuple[sparse.csr_matrix, np.ndarray]:
        rows: list[int] = []
        cols: list[int] = []
        vals: list[float] = []
        ceilings = np.zeros(len(readings))
        # A word no resource uses is as telling as the rarest one: it counts in the ceiling, so a
        # need whose key words nothing offers scores low on the little it shares.
        unseen_idf = math.log(1.0 + (len(self.resources) + 0.5) / 0.5)
        for i, reading in enumerate(readings):
            for term, weight in _features(reading).items():
                j = self.vocab.get(term)
                if j is None:
                    ceilings[i] += weight * unseen_idf * (K1 + 1)
                    continue
                rows.append(i)
                cols.append(j)
                vals.append(weight)
                ceilings[i] += weight * self.idf[j] * (K1 + 1)
        q = sparse.csr_matrix((vals, (rows, cols)), shape=(len(readings), len(self.vocab)))
        return q, ceilings

    def _rank_batch(self, needs: Sequence[NeedInput], limit: int, include_weak: bool) -> list[list[Match]]:
        readings = [read(n.title, n.description, is_need=True) for n in needs]
        if not self.resources:
            return [[] for _ in needs]
        q, ceilings = self._query(readings)
        product = (q @ self.doc_weights).tocoo()
        rows, cols, raw = product.row, product.col, product.data
        keep = self._feasible(needs, rows, cols)
        rows, cols, raw = rows[keep], cols[keep], raw[keep]
        order = np.lexsort((-raw, rows))
        rows, cols, raw = rows[order], cols[order], raw[order]
        starts = np.searchsorted(rows, np.arange(len(needs)))
        ends = np.searchsorted(rows, np.arange(len(needs)), side="right")
        out: list[list[Match]] = []
        for i, need in enumerate(needs):
            top = range(starts[i], min(ends[i], starts[i] + RERANK_DEPTH))
            ceiling = max(ceilings[i], 1e-9)
            scored = [self._judge(need, readings[i], int(cols[k]), float(raw[k]) / ceiling) for k in top]
            scored.sort(key=lambda m: -m.score)
            strong = [m for m in scored if not m.weak]
            weak = [m for m in scored if m.weak] if include_weak else []
            chosen = (strong + weak)[:limit]
            for m in chosen:  # explaining costs more than judging: only what is returned
                m.explanation = self._explain(
                    need,
                    readings[i],
                    self.resources[m.resource_index],
                    self.readings[m.resource_index],
                    m.notes,
                )
            out.append(chosen)
        return out

    def _feasible(self, needs: Sequence[NeedInput], rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        n_from = np.array([n.wanted_from.toordinal() for n in needs], dtype=np.int64)[rows]
        n_to = np.array([n.wanted_to.toordinal() for n in needs], dtype=np.int64)[rows]
        overlap = (self._r_from[cols] <= n_to) & (self._r_to[cols] >= n_from)
        n_lat = np.array([np.nan if n.lat is None else n.lat for n in needs], dtype=float)[rows]
        n_lng = np.array([np.nan if n.lng is None else n.lng for n in needs], dtype=float)[rows]
        dist = haversine_km(n_lat, n_lng, self._r_lat[cols], self._r_lng[cols])
        radius = self._r_radius[cols]
        # Unknown positions cannot be checked: only a resource that serves anywhere may match.
        in_radius = np.where(np.isnan(dist), np.isinf(radius), dist <= radius)
        feasible: np.ndarray = self._r_usable[cols] & overlap & in_radius
        return feasible

    # -- a community worker's reading of one pair ----------------------------------------------

    def _judge(self, need: NeedInput, nr: Reading, j: int, relevance: float) -> Match:
        resource = self.resources[j]
        rr = self.readings[j]
        notes: list[str] = []
        factor = CATEGORY_FIT.get(need.category, {}).get(resource.category, 0.8)
        shared = nr.concepts & rr.concepts
        core_need = nr.concepts - AUDIENCE_CONCEPTS
        excluded = core_need & rr.excluded
        if excluded:
            factor *= 0.35
            notes.append("资源写明不含：" + "、".join(CONCEPTS[c][0] for c in sorted(excluded)))
        if nr.wants_learning and not rr.teaches:
            factor *= 0.6
            notes.append("需求是学习培训，资源不提供教学")
        if (
            rr.capacity is not None
            and need.beneficiaries > rr.capacity * 1.2
            and "venue"
            in (
                need.category,
                resource.category,
            )
        ):
            factor *= 0.4
            notes.append(f"场地约容纳{rr.capacity}人，少于受益人数{need.beneficiaries}")
        if core_need and not (shared - AUDIENCE_CONCEPTS):
            factor *= 0.55
            notes.append("没有共同的服务内容，只是服务对象相同或字面相近")
        score = min(1.0, relevance * factor * 5.0)
        return Match(
            resource_key=resource.key,
            score=round(score, 4),
            weak=score < WEAK_BELOW,
            resource_index=j,
            notes=notes,
        )

    def _explain(
        self,
        need: NeedInput,
        nr: Reading,
        resource: ResourceInput,
        rr: Reading,
        notes: list[str],
    ) -> dict[str, Any]:
        shared = nr.concepts & rr.concepts
        words = sorted(set(nr.words) & set(rr.words), key=lambda w: (-len(w), w))[:8]
        concepts = [
            {
                "concept": c,
                "label": CONCEPTS[c][0],
                "need_words": list(nr.evidence[c][:3]),
                "resource_words": list(rr.evidence[c][:3]),
            }
            for c in sorted(shared, key=lambda c: (c in AUDIENCE_CONCEPTS, c))
        ]
        distance = None
        if (
            need.lat is not None
            and need.lng is not None
            and resource.lat is not None
            and resource.lng is not None
        ):
            distance = round(float(haversine_km(need.lat, need.lng, resource.lat, resource.lng)), 2)
        overlap_from = max(need.wanted_from, resource.available_from)
        overlap_to = min(need.wanted_to, resource.available_to)
        fit = CATEGORY_FIT.get(need.category, {}).get(resource.category, 0.8)
        category = (
            "same" if need.category == resource.category else ("related" if fit >= 0.85 else "different")
        )
        parts = []
        if concepts:
            parts.append("内容相符：" + "、".join(str(c["label"]) for c in concepts[:3]))
        if words:
            parts.append("共同词语：" + "、".join(words[:5]))
        if distance is not None:
            radius = "不限" if resource.serves_radius_km is None else f"{resource.serves_radius_km:g}公里"
            parts.append(f"距离{distance:g}公里（服务半径{radius}）")
        parts.append(f"时间重叠{overlap_from.isoformat()}至{overlap_to.isoformat()}")
        parts.append(f"剩余{resource.remaining_quantity}")
        parts.extend(notes)
        return {
            "summary": "；".join(parts),
            "matched_words": words,
            "matched_concepts": concepts,
            "category_fit": category,
            "need_category": CATEGORY_LABELS.get(need.category, need.category),
            "resource_category": CATEGORY_LABELS.get(resource.category, resource.category),
            "distance_km": distance,
            "serves_radius_km": resource.serves_radius_km,
            "window_overlap": {
                "from": overlap_from.isoformat(),
                "to": overlap_to.isoformat(),
                "days": (overlap_to - overlap_from).days + 1,
            },
            "remaining_quantity": resource.remaining_quantity,
            "cautions": notes,
        }


def distance_km(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    return (
        float(haversine_km(lat1, lng1, lat2, lng2)) if math.isfinite(lat1 + lng1 + lat2 + lng2) else math.inf
    )
