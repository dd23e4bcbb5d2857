"""rnnembed: recurrent language models, their hidden states as embeddings, and search on Milvus."""

from rnnembed.errors import RnnembedError
from rnnembed.tokenizer import Tokenizer

__version__ = "0.1.0"

__all__ = ["RnnembedError", "Tokenizer", "__version__"]
