"""Pytest runs the unit tests and every notebook (nbval) in the small `ci` profile."""

import os

os.environ.setdefault("TINYLM_PROFILE", "ci")
