from ytproxy.cli import main

raise SystemExit(main())
