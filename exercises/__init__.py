"""Exercises: write core pieces of TinyLM yourself; the checks compare them with `tinylm`."""
