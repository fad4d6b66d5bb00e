from ytproxy.cli.main import main

raise SystemExit(main())
