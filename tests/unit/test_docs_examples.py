"""Every TOML example in the README and docs/ is a configuration tidings accepts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tidings.config import load_config

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"```toml\n(.*?)```", re.S)

EXAMPLES = [
    pytest.param(block, id=f"{path.name}#{n}")
    for path in DOCS
    for n, block in enumerate(BLOCK.findall(path.read_text()), 1)
]


def test_the_docs_have_examples():
    assert len(EXAMPLES) >= 4


@pytest.mark.parametrize("block", EXAMPLES)
def test_toml_example_loads(block, tmp_path):
    path = tmp_path / "tidings.toml"
    path.write_text(block)
    config = load_config(path, environ={})
    config.channel_namespaces()
    config.message_templates()
