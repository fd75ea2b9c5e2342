from tfbuild.cli import main

raise SystemExit(main())
