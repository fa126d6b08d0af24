"""Shared fixtures: tiny raw trees and the location of the real sleep-accel data."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from tests.factories import make_mesa_tree, make_sleep_accel_tree

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_SLEEP_ACCEL = Path(os.environ.get("FM_BIO_SLEEP_ACCEL", REPO_ROOT / ".." / "shared" / "data" / "sleep-accel")).resolve()
"""The real sleep-accel subjects (set FM_BIO_SLEEP_ACCEL to point elsewhere)."""


@pytest.fixture
def mesa_tree(tmp_path: Path) -> Path:
    return make_mesa_tree(tmp_path / "mesa", n_subjects=2)


@pytest.fixture
def sleep_accel_tree(tmp_path: Path) -> Path:
    return make_sleep_accel_tree(tmp_path / "sleep-accel")


@pytest.fixture(autouse=True)
def _quiet_logs(caplog):
    caplog.set_level(logging.INFO)
