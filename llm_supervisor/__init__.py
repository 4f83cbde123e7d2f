"""llm-supervisor: keeps local LLM engines serving on AMD GPUs.

Deliberately free of imports: the console scripts import this package first, and
``llm-supervisorctl status`` must start about as fast as Python itself.
"""

__version__ = "0.1.0"
