"""``python -m viper_rs``."""

import sys

from viper_rs.cli import main

sys.exit(main())
