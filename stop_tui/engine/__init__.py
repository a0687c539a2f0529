"""The STOP engine. It never imports Textual (tests/test_imports.py enforces it)."""
