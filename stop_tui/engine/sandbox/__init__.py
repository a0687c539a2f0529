"""Untrusted code (LM-written solutions and improvers) runs here, in child processes."""
