"""Helpers the tests share: small stores, trees and checks (imported as ``support.<module>``)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
"""The repository's root: subprocesses the tests start run from it."""
