"""Bag-of-words: word or character TF-IDF chosen by script, and word tokens for baselines.

Text that is mostly Chinese or Japanese (no spaces between words) gets character uni+bigrams;
other text gets word n-grams. All TF-IDF is sublinear (1 + log tf) with L2-normalised rows.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sklearn.feature_extraction.text import TfidfVectorizer

from rnnembed.chunking import CJK
from rnnembed.errors import RnnembedError

_CJK_CHAR = re.compile(f"[{CJK}]")
_TOKEN = re.compile(f"[{CJK}]|[^\\W_{CJK}]+(?:'[^\\W_{CJK}]+)*|[^\\w\\s]")
CJK_SHARE = 0.3  # text is treated as CJK when this share of its non-space characters is
SAMPLE = 2000  # texts looked at to decide


def is_cjk(texts: Sequence[str]) -> bool:
    """Whether at least ``CJK_SHARE`` of the non-space characters of (a sample of) texts are
    kana or CJK ideographs."""
    sample = "".join(texts[:SAMPLE])
    letters = sum(not c.isspace() for c in sample)
    return letters > 0 and len(_CJK_CHAR.findall(sample)) >= CJK_SHARE * letters


def vectorizer(texts: Sequence[str], word_ngrams: tuple[int, int] = (1, 2)) -> TfidfVectorizer:
    """A TF-IDF fitted on ``texts``: character (1, 2)-grams for CJK, else word n-grams;
    RnnembedError if they hold no word to count (blank or punctuation-only sentences)."""
    if is_cjk(texts):
        tfidf = TfidfVectorizer(analyzer="char", ngram_range=(1, 2), sublinear_tf=True)
    else:
        tfidf = TfidfVectorizer(ngram_range=word_ngrams, sublinear_tf=True)
    try:
        return tfidf.fit(texts)
    except ValueError as exc:  # scikit-learn's "empty vocabulary"
        raise RnnembedError(
            f"the texts hold no words to count ({exc}); check that the file's sentence "
            "columns hold the sentences"
        ) from None


def words(text: str) -> list[str]:
    """Lower-cased tokens: each CJK character, each word (with inner apostrophes), each other
    symbol."""
    return _TOKEN.findall(text.lower())
