"""``python -m supervisor.simengine``: the same as ``llm-supervisor-simengine``."""

import sys

from supervisor.simengine.cli import main

sys.exit(main())
