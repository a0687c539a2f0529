"""Reports over many sessions (`stop-tui report`, `export`, the TUI's compare screen): read
session folders only, group runs by (task, model, preset), aggregate with engine/stats."""
