"""tinylm: the one package behind the TinyLM course (pretraining a tiny GPT on Tang poems)."""

__version__ = "0.1.0"
