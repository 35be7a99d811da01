"""Where the course's committed measurements live: data/reference/ in the repository.

The scripts in bench/ write their JSON files there; `tinylm.viz` (reference_runs,
reference_files) and `tinylm.nanogpt_reference` read them back for the notebooks.
"""

from tinylm.download import PROJECT_ROOT

REFERENCE_DIR = PROJECT_ROOT / "data" / "reference"  # the committed measurements
