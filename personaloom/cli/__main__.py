"""`python -m personaloom.cli`: the same as the `personaloom` command."""

import sys

from personaloom.cli import main

sys.exit(main())
