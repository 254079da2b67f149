"""Make the engine tests' toy module importable as ``engine_toy`` (a unique module name)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

TOY_PATH = Path(__file__).with_name("toy.py")

if "engine_toy" not in sys.modules:
    _spec = importlib.util.spec_from_file_location("engine_toy", TOY_PATH)
    _mod = importlib.util.module_from_spec(_spec)
    sys.modules["engine_toy"] = _mod
    _spec.loader.exec_module(_mod)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """The toy models are tiny: one intra-op thread is fastest and bit-reproducible."""
    yield
