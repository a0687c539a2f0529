"""The Textual workbench. Nothing under stop_tui.engine imports this package."""
