"""Many STOP sessions at once on Ray (`stop-tui sweep`); each run stays a normal session."""
