"""`python -m conformance [HOST:PORT]`: see runner.py, or --help."""

import sys

from conformance.runner import main

sys.exit(main())
