"""`python -m faustgen.cli`: the same as the faustgen command."""

import sys

from faustgen.cli.main import main

sys.exit(main())
