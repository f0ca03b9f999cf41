"""Every README code block tagged ``python readme-test`` runs, each in a fresh namespace, so none can rot."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SNIPPETS_FILE = ROOT / "README.md"
BLOCK = re.compile(r"^```python readme-test\n(.*?)^```", re.DOTALL | re.MULTILINE)


def snippets() -> list[str]:
    """The tagged blocks, in file order."""
    return BLOCK.findall(SNIPPETS_FILE.read_text(encoding="utf-8"))


def test_the_readme_has_the_chatbot_and_pipeline_snippets() -> None:
    blocks = snippets()
    assert len(blocks) >= 2
    assert any("chain.stream(" in block for block in blocks)
    assert any("|" in block and "as_tool()" in block for block in blocks)


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(snippets())))
def test_snippet_runs(index: int, elmd_home: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = snippets()[index]
    # dont_inherit: a snippet runs as a user's script would, without this module's `from __future__` flags
    exec(compile(code, f"{SNIPPETS_FILE.name}[snippet {index}]", "exec", dont_inherit=True), {"__name__": "__main__"})
    assert capsys.readouterr().out.strip(), "a README snippet should print what it shows"
