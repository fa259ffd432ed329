"""``python -m binprune.cli`` (used by ``torchrun ... -m binprune.cli``): the command line."""

import sys

from . import main

sys.exit(main())
