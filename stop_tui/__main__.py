from stop_tui.cli import entry

entry()
