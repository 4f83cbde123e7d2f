"""``python -m llm_supervisor.simengine``: the same as ``llm-supervisor-simengine``."""

import sys

from llm_supervisor.simengine.cli import main

sys.exit(main())
