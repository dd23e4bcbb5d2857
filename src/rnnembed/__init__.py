"""rnnembed: recurrent language models, their hidden states as embeddings, and search on Milvus.

The public API: ``LanguageModel``, ``Tokenizer``, ``VectorStore`` and ``RnnembedError``
(``LanguageModel`` and ``VectorStore`` load torch and pymilvus on first use).
"""

from rnnembed.errors import RnnembedError
from rnnembed.tokenizer import Tokenizer

__version__ = "0.1.0"

__all__ = ["LanguageModel", "RnnembedError", "Tokenizer", "VectorStore", "__version__"]


def __getattr__(name: str):
    if name == "LanguageModel":
        from rnnembed.language_model import LanguageModel

        return LanguageModel
    if name == "VectorStore":
        from rnnembed.store import VectorStore

        return VectorStore
    raise AttributeError(f"module 'rnnembed' has no attribute {name!r}")
