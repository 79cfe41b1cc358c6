"""``python -m learned_schedules.training``: the trainer's command line."""

import sys

from .cli import main

sys.exit(main())
