"""Chinese text → words, for search and matching (jieba with a community-service dictionary)."""

from __future__ import annotations

import re
from functools import lru_cache

import jieba

_SPLIT = re.compile(r"[\s\u3000,，。.;；:：!！?？、()（）\[\]【】\"'“”‘’/／|·—\-]+")


@lru_cache(maxsize=1)
def _tokenizer() -> jieba.Tokenizer:
    tokenizer = jieba.Tokenizer()
    tokenizer.initialize()
    return tokenizer


def segment(text: str) -> list[str]:
    """The words of `text`, lower-cased, punctuation dropped."""
    tok = _tokenizer()
    words: list[str] = []
    for chunk in _SPLIT.split(text.lower()):
        if chunk:
            words.extend(w for w in tok.lcut(chunk, HMM=False) if w.strip())
    return words


def index_tokens(*texts: str | None) -> str:
    """What is stored in `search_tokens`: the words of the texts, space separated."""
    return " ".join(w for t in texts if t for w in segment(t))
