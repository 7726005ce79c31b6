"""`python -m conformance [HOST:PORT]`: see runner.py, or --help."""

from conformance.runner import exit_process, main

exit_process(main())
