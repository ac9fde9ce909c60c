"""Where the test data live, independent of how deep a test file sits (tests mirror ``src/``)."""

from pathlib import Path

TESTS = Path(__file__).resolve().parent
DATA = TESTS / "data"
ROOT = TESTS.parent
