"""Shared test fixtures: paths to the read-only shared data and a registered toy model."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

if "coco_reference" not in sys.modules:  # shared independent COCO scoring (tests/coco_reference.py)
    _spec = importlib.util.spec_from_file_location(
        "coco_reference", Path(__file__).with_name("coco_reference.py")
    )
    sys.modules["coco_reference"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["coco_reference"])

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PERCEPTA_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_data_path(*parts: str) -> Path:
    """A path inside ../shared/data; the test is skipped (with the reason) when it is absent."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"shared dataset not found at {p} (set PERCEPTA_SHARED_DATA)")
    return p


@pytest.fixture(autouse=True)
def _single_thread_torch():
    """Keep tests predictable on small CI machines."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(min(n, 2))
    yield
    torch.set_num_threads(n)


@pytest.fixture
def one_thread():
    """One intra-op thread (tiny toy models: fastest, and bit-reproducible run to run)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True, scope="session")
def _private_cache_dir(tmp_path_factory):
    """Statistics caches go to a per-session folder, never the user's ~/.cache."""
    old = os.environ.get("PERCEPTA_CACHE_DIR")
    os.environ["PERCEPTA_CACHE_DIR"] = str(tmp_path_factory.mktemp("percepta_cache"))
    yield
    if old is None:
        os.environ.pop("PERCEPTA_CACHE_DIR", None)
    else:
        os.environ["PERCEPTA_CACHE_DIR"] = old
