"""Every ```bash and ```python block of README.md and docs/*.md runs as written, offline.

Blocks of one file run in order, in a fresh copy of the repository (outputs stay in a temp folder; the copy's
``../shared`` points at the real one). A block right after ``<!-- needs-hub -->`` or
``<!-- not-run: REASON -->`` is skipped with its reason (``pytest -rs`` lists them).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```\s*(\w*)\s*$")
MARKER = re.compile(r"^<!--\s*(needs-hub|not-run)\s*(?::\s*(.*?))?\s*-->$")
RUNNERS = {"bash": ["bash", "-euo", "pipefail", "-c"], "python": [sys.executable, "-c"]}
NOT_COPIED = shutil.ignore_patterns(".git", ".venv", "venv", "runs", "indexes", "scratch", "models", "__pycache__", ".pytest_cache", "*.egg-info")


@dataclass
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    skip: str | None  # reason, for a marked block

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(REPO).as_posix()}:{self.line}"


def doc_files(root: Path = REPO) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def extract_blocks(path: Path) -> list[Block]:
    """The bash/python blocks of a Markdown file, with the skip reason of a marker on the line before the fence."""
    blocks, lines = [], path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        fence = FENCE.match(lines[index])
        if not fence:
            index += 1
            continue
        end = next((i for i in range(index + 1, len(lines)) if lines[i].strip() == "```"), None)
        if end is None:
            raise ValueError(f"{path}:{index + 1}: code block is never closed")
        previous = next((lines[i].strip() for i in range(index - 1, -1, -1) if lines[i].strip()), "")
        marker = MARKER.match(previous)
        skip = None
        if marker:
            skip = "needs the Hugging Face Hub" if marker.group(1) == "needs-hub" else (marker.group(2) or "marked not-run")
        if fence.group(1) in RUNNERS:
            blocks.append(Block(path, index + 1, fence.group(1), "\n".join(lines[index + 1 : end]) + "\n", skip))
        index = end + 1
    return blocks


ALL_BLOCKS = [block for path in doc_files() for block in extract_blocks(path)]


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory):
    """One fresh copy of the repository per Markdown file, shared by that file's blocks (run in order)."""
    copies: dict[Path, Path] = {}

    def workdir(doc: Path) -> Path:
        if doc not in copies:
            root = tmp_path_factory.mktemp(doc.stem)
            shutil.copytree(REPO, root / "repo", ignore=NOT_COPIED)
            shared = REPO.parent / "shared"
            if shared.is_dir():
                (root / "shared").symlink_to(shared, target_is_directory=True)
            copies[doc] = root / "repo"
        return copies[doc]

    return workdir


def block_environment(workdir: Path) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               HAYSTACK_TELEMETRY_ENABLED="False", PYTHONPATH=str(workdir))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])  # rerank-pipeline, python
    return env


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=[block.name for block in ALL_BLOCKS])
def test_doc_block_runs(block: Block, workdirs):
    if block.skip:
        print(f"skipped {block.name}: {block.skip}")
        pytest.skip(block.skip)
    workdir = workdirs(block.path)
    result = subprocess.run(
        [*RUNNERS[block.language], block.code], cwd=workdir, env=block_environment(workdir),
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, (
        f"{block.name} ({block.language}) exited {result.returncode}\n--- code\n{block.code}"
        f"--- stdout (end)\n{result.stdout[-3000:]}\n--- stderr (end)\n{result.stderr[-3000:]}"
    )


def test_extract_blocks_reads_languages_and_markers(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "text\n```bash\necho one\n```\n<!-- needs-hub -->\n```python\nprint(2)\n```\n\n"
        "<!-- not-run: installs packages -->\n\n```bash\npip install x\n```\n```\nplain output\n```\n```python\nx = 1\n```\n",
        encoding="utf-8",
    )
    blocks = extract_blocks(page)
    assert [(b.line, b.language, b.skip) for b in blocks] == [
        (2, "bash", None), (6, "python", "needs the Hugging Face Hub"), (12, "bash", "installs packages"), (18, "python", None),
    ]
    assert blocks[0].code == "echo one\n"
    page.write_text("```bash\necho never closed\n", encoding="utf-8")
    with pytest.raises(ValueError, match="never closed"):
        extract_blocks(page)


def test_every_doc_file_is_collected():
    collected = {block.path for block in ALL_BLOCKS}
    assert REPO / "README.md" in collected
    assert all(path in collected for path in doc_files() if "```bash" in path.read_text(encoding="utf-8")
               or "```python" in path.read_text(encoding="utf-8"))
