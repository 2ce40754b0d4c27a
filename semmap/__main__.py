from semmap.cli import main

raise SystemExit(main())
