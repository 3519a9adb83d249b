"""Is a new need one already on the list? (FixMyStreet asks before a report is sent.)

Two reports of the same thing rarely share their words: "楼道灯坏了" and "3单元楼道灯不亮".
Words from jieba catch the shared terms, character bigrams the shared fragments jieba cuts
differently; the title carries most of the meaning, the description confirms it.
"""

from __future__ import annotations

import math
import re

from gongjian.matching.text import segment

# Above this, a need is shown as a possible duplicate. Different needs of one grid cell in the
# public sample stay below 0.1; reworded reports of one problem score 0.3 and more.
DUPLICATE_THRESHOLD = 0.3
# How near a need without a grid cell must be to count as "the same place".
NEARBY_METRES = 300.0
EARTH_RADIUS_M = 6_371_000.0

_CJK = re.compile(r"[\u4e00-\u9fff]+")
# Words that say nothing about what is needed.
_FILLER = frozenset(
    {
        *("的", "了", "和", "与", "及", "或", "在", "是", "有", "我", "我们", "他们", "一", "个", "也"),
        *("都", "就", "要", "想", "希望", "能", "能够", "需要", "请", "帮", "帮助", "给", "把", "被"),
        *("让", "一些", "很", "多", "太", "还", "没有", "不", "吗", "呢", "吧", "啊"),
    }
)


def features(text: str) -> frozenset[str]:
    words = {w for w in segment(text) if w not in _FILLER}
    bigrams = {"#" + run[i : i + 2] for run in _CJK.findall(text) for i in range(len(run) - 1)}
    return frozenset(words | bigrams)


def _dice(a: frozenset[str], b: frozenset[str]) -> float:
    return 2 * len(a & b) / (len(a) + len(b)) if a and b else 0.0


def similarity(title_a: str, text_a: str, title_b: str, text_b: str) -> float:
    """0 … 1; `text_*` is the title and description together."""
    on_title = _dice(features(title_a), features(title_b))
    on_text = _dice(features(text_a), features(text_b))
    # A matching title alone is enough; matching descriptions only confirm a half-matching title.
    return round(max(on_title, (on_title + on_text) / 2), 3)


def distance_m(lat_a: float, lng_a: float, lat_b: float, lng_b: float) -> float:
    """Great-circle distance (haversine)."""
    p1, p2 = math.radians(lat_a), math.radians(lat_b)
    dp, dl = p2 - p1, math.radians(lng_b - lng_a)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def box_around(lat: float, lng: float, metres: float) -> tuple[float, float, float, float]:
    """(min_lat, max_lat, min_lng, max_lng) of a box holding every point within `metres`."""
    dlat = math.degrees(metres / EARTH_RADIUS_M)
    dlng = dlat / max(math.cos(math.radians(lat)), 1e-6)
    return lat - dlat, lat + dlat, lng - dlng, lng + dlng
