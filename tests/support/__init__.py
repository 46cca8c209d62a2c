"""Test helpers for the card, release and consumer tests (real Parquet, real git)."""
