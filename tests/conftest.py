"""Shared test set-up: tiny CPU runs, and where the reference fixtures live."""
import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def reference_dir() -> pathlib.Path:
  """`$MASKGIL_REFERENCE` or the `shared/reference` folder beside the checkout."""
  env = os.environ.get("MASKGIL_REFERENCE")
  candidates = [pathlib.Path(env)] if env else []
  candidates += [REPO.parent / "shared" / "reference", REPO / "shared" / "reference"]
  for c in candidates:
    if (c / "fixtures").is_dir():
      return c
  raise FileNotFoundError(f"reference fixtures not found in {candidates}; "
                          "set MASKGIL_REFERENCE to the folder holding fixtures/")


@pytest.fixture(scope="session")
def fixtures_dir() -> pathlib.Path:
  return reference_dir() / "fixtures"


@pytest.fixture(scope="session")
def reference() -> pathlib.Path:
  return reference_dir()
