"""The app's screens: main, session picker, help."""
