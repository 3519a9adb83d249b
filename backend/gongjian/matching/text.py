"""Chinese text → words and concepts, for search and matching.

jieba segments, with every domain term of `lexicon.CONCEPTS` added to its dictionary so
四点半课堂 or 适老化 stay one word. `read()` goes further for matching: it finds the
domain concepts a text speaks of, and the ones it explicitly excludes (只借物料，不做咨询).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import lru_cache

import jieba

from gongjian.matching.lexicon import (
    CONCEPTS,
    LEARNING_CUES,
    NEED_NEGATION_AFTER,
    NEGATION_AFTER,
    NEGATION_BEFORE,
    STOPWORDS,
    TEACHING_CUES,
    all_terms,
)

jieba.setLogLevel(logging.WARNING)

_SPLIT = re.compile(r"[\s\u3000,，。.;；:：!！?？、()（）\[\]【】\"'“”‘’/／|·—\-~～]+")
_CLAUSES = re.compile(r"[，。；;！？!?\n,]+")
_CAPACITY = re.compile(
    r"(?:容纳|能坐|坐得下|可坐|名额|限)\s*(\d+)\s*(?:人|名|座)|(\d+)\s*(?:人以内|人以下|座)|不超过\s*(\d+)\s*人"
)
_NUMBER_ONLY = re.compile(r"^[\d.]+$")


@lru_cache(maxsize=1)
def _tokenizer() -> jieba.Tokenizer:
    tokenizer = jieba.Tokenizer()
    tokenizer.initialize()
    for term in all_terms():
        tokenizer.add_word(term.lower(), freq=200_000)
    return tokenizer


@lru_cache(maxsize=1)
def _term_pattern() -> tuple[re.Pattern[str], dict[str, list[str]]]:
    concepts_of: dict[str, list[str]] = {}
    for concept, (_, terms) in CONCEPTS.items():
        for term in terms:
            concepts_of.setdefault(term.lower(), []).append(concept)
    alternation = "|".join(re.escape(t) for t in sorted(concepts_of, key=len, reverse=True))
    return re.compile(alternation), concepts_of


def segment(text: str) -> list[str]:
    """The words of `text`, lower-cased, punctuation dropped."""
    return [w for w in _tokenizer().lcut(text.lower(), HMM=False) if not _SPLIT.fullmatch(w)]


def content_words(text: str) -> list[str]:
    """`segment` without stopwords, single characters and bare numbers: the words that carry meaning."""
    return [w for w in segment(text) if len(w) > 1 and w not in STOPWORDS and not _NUMBER_ONLY.match(w)]


def index_tokens(*texts: str | None) -> str:
    """What is stored in `search_tokens`: the words of the texts, space separated."""
    return " ".join(w for t in texts if t for w in segment(t))


@dataclass(frozen=True)
class Reading:
    """What a need or a resource speaks of, as a community worker reads it."""

    words: tuple[str, ...]
    concepts: frozenset[str]
    # concept → the words of the text that made it, for explanations
    evidence: dict[str, tuple[str, ...]]
    excluded: frozenset[str]  # concepts the text says it does not offer (or want)
    teaches: bool  # offers teaching, training or guidance
    wants_learning: bool  # asks for someone to teach or train
    capacity: int | None  # people a venue holds, when it says
    headline: frozenset[str] = frozenset()  # concepts of the title: what it is mainly about


def _negated_span(clause: str, after: tuple[str, ...], before: tuple[str, ...]) -> tuple[int, int] | None:
    for cue in before:
        at = clause.find(cue)
        if at >= 0:
            return 0, at
    starts = [at for cue in after if (at := clause.find(cue)) >= 0]
    if starts:
        return min(starts), len(clause)
    return None


def _split_negated(text: str, *, is_need: bool) -> tuple[str, str]:
    """The text split into what it affirms and what it excludes."""
    after = NEED_NEGATION_AFTER if is_need else NEGATION_AFTER
    before = () if is_need else NEGATION_BEFORE
    kept: list[str] = []
    negated: list[str] = []
    for clause in _CLAUSES.split(text):
        span = _negated_span(clause, after, before)
        if span is None:
            kept.append(clause)
        else:
            kept.append(clause[: span[0]] + " " + clause[span[1] :])
            negated.append(clause[span[0] : span[1]])
    return "，".join(kept), "，".join(negated)


def _concepts_in(text: str) -> dict[str, list[str]]:
    pattern, concepts_of = _term_pattern()
    found: dict[str, list[str]] = {}
    for m in pattern.finditer(text.lower()):
        for concept in concepts_of[m.group(0)]:
            found.setdefault(concept, []).append(m.group(0))
    return found


def _capacity(text: str) -> int | None:
    numbers = [int(n) for m in _CAPACITY.finditer(text) for n in m.groups() if n]
    return max(numbers) if numbers else None


@lru_cache(maxsize=65_536)
def read(title: str, description: str, *, is_need: bool) -> Reading:
    affirmed, negated = _split_negated(f"{title}。{description}", is_need=is_need)
    found = _concepts_in(affirmed)
    excluded = set(_concepts_in(negated)) - set(found)
    title_words = content_words(title)
    words = title_words * 2 + content_words(_split_negated(description, is_need=is_need)[0])
    return Reading(
        words=tuple(words),
        concepts=frozenset(found),
        evidence={c: tuple(dict.fromkeys(ws)) for c, ws in found.items()},
        excluded=frozenset(excluded),
        teaches=any(cue in affirmed for cue in TEACHING_CUES),
        wants_learning=is_need and any(cue in affirmed for cue in LEARNING_CUES),
        capacity=None if is_need else _capacity(affirmed),
        headline=frozenset(_concepts_in(title)) & frozenset(found),
    )
