from stop_tui.cli import main

raise SystemExit(main())
