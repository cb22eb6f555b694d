"""``python -m aevis_core.cli``."""

import sys

from aevis_core.cli.main import main

sys.exit(main())
