"""The README's "Use it as a library" snippets run as written (from the repository root)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def library_snippets() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Use it as a library\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def test_the_library_section_has_two_snippets() -> None:
    assert len(library_snippets()) == 2


@pytest.mark.parametrize("index", [0, 1])
def test_library_snippet_runs(index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = library_snippets()[index]
    for shipped in re.findall(r'"(results/[^"]+\.pt)"', code):  # what a checkout would hold
        (tmp_path / shipped).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / shipped, tmp_path / shipped)
    monkeypatch.chdir(tmp_path)  # the snippets write their files into the working directory
    torch.manual_seed(0)
    exec(compile(code, f"README.md snippet {index + 1}", "exec"), {"__name__": "__readme__"})
