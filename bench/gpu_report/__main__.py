from bench.gpu_report.cli import main

raise SystemExit(main())
