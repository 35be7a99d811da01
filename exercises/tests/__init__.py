"""Checks of the exercises against the reference implementations in `tinylm`."""
