"""The detector loads spaCy's model once per test session (about a second when the machine is idle)."""

from __future__ import annotations

import pytest

from llmasos.privacy.detector import PiiDetector, shared_detector


@pytest.fixture(scope="session")
def detector() -> PiiDetector:
    return shared_detector()
