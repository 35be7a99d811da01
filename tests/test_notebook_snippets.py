"""The code in the notebooks' prose (```python blocks nbval does not run) compiles and imports.

An answer's sketch is code a learner copies: a misspelt name or an import from the wrong
module would only show when someone runs it.
"""

import ast
import importlib
import json
import re
import textwrap

import pytest

from tinylm.download import PROJECT_ROOT

FENCED_PYTHON = re.compile(r"```python\n(.*?)```", re.DOTALL)


def snippets() -> list[tuple[str, str]]:
    """(notebook and block number, code) for every ```python block of every markdown cell."""
    found = []
    for path in sorted((PROJECT_ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        markdown = "".join(
            "".join(c["source"]) + "\n" for c in cells if c["cell_type"] == "markdown"
        )
        for number, block in enumerate(FENCED_PYTHON.findall(markdown)):
            found.append((f"{path.stem}#{number}", textwrap.dedent(block)))
    return found


def exists(module, name: str) -> bool:
    """True if `name` is an attribute of module or one of its submodules."""
    if hasattr(module, name):
        return True
    try:
        importlib.import_module(f"{module.__name__}.{name}")
    except ModuleNotFoundError:
        return False
    return True


@pytest.mark.parametrize(("where", "code"), snippets(), ids=[w for w, _ in snippets()])
def test_a_prose_snippet_compiles_and_its_tinylm_imports_exist(where, code):
    tree = ast.parse(code, filename=where)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tinylm"):
            module = importlib.import_module(node.module)
            missing = [a.name for a in node.names if not exists(module, a.name)]
            assert not missing, f"{where}: {node.module} has no {missing}"
