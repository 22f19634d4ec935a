"""The attack suite: each test is one attack, with what the server must answer."""

from __future__ import annotations

import sys
from pathlib import Path

# The integration tests' helpers (real sockets on 127.0.0.1).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))
