"""vgg model cases for the one list of models (tests/test_models.py)."""
from __future__ import annotations

from tests.model_cases import Case

CASES: list[Case] = []
