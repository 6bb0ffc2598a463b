"""Every code block of README.md runs as written, in order, in an empty folder.

Python blocks share one namespace (as in a notebook); shell blocks run with ``bash -e`` and
the package's ``geneinfer`` on PATH. Nothing outside the package is available: no data folder
(``GENEINFER_DATA_DIR`` unset) and no network, so the README starts from the embedded data.
A block that cannot run here says why in a comment on the line before it:
``<!-- not run by tests: REASON -->`` (installing, a GPU cluster, downloads).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
NOT_RUN = re.compile(r"<!--\s*not run by tests:\s*(?P<reason>[^>]*?)\s*-->")
FENCE = re.compile(r"^```(?P<lang>\w*)\s*$")


@dataclass
class Block:
    lang: str
    code: str
    line: int
    skip_reason: str | None


def readme_blocks(text: str) -> list[Block]:
    """The fenced code blocks, with the reason given before each one not to run it."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start = i
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        before = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        reason = NOT_RUN.search(before)
        blocks.append(Block(m["lang"], "\n".join(lines[start + 1:end]), start + 1,
                            reason["reason"] if reason else None))
        i = end + 1
    return blocks


def test_readme_blocks_are_parsed_and_reasons_are_given():
    blocks = readme_blocks(README.read_text())
    assert len(blocks) >= 6
    for block in blocks:
        assert block.lang in ("python", "bash", "text", "toml"), f"README line {block.line}"
        if block.skip_reason is not None:
            assert len(block.skip_reason) > 10, f"README line {block.line}: say why"


@pytest.mark.slow
def test_every_readme_block_runs(tmp_path, monkeypatch):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENEINFER_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["GENEINFER_CACHE"] = str(tmp_path / "cache")
    env["MPLBACKEND"] = "Agg"
    for key in [k for k in os.environ if k.startswith("GENEINFER_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("GENEINFER_CACHE", env["GENEINFER_CACHE"])
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__readme__"}
    ran = 0
    for block in readme_blocks(README.read_text()):
        if block.skip_reason is not None or block.lang not in ("python", "bash"):
            continue
        where = f"README.md block at line {block.line}"
        if block.lang == "python":
            exec(compile(block.code, where, "exec"), namespace)
        else:
            run = subprocess.run(["bash", "-euo", "pipefail", "-c", block.code], cwd=tmp_path,
                                 env=env, capture_output=True, text=True, timeout=900)
            assert run.returncode == 0, f"{where} failed:\n{run.stdout[-3000:]}\n" \
                                        f"{run.stderr[-3000:]}"
        ran += 1
    assert ran >= 4
