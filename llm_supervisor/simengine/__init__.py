"""The simulated engine: speaks Ollama's or vLLM's HTTP API and follows a fault plan.

It lets the supervisor be tried and tested without an AMD GPU (docs/contract.md §12).
Standard library only, so it starts fast. Modules: ``plan`` (the fault plan), ``cards`` (the
simulated host's cards, the one Ollama holds to, the kernel's lines about them), ``listings``
(what rocminfo, vulkaninfo and clinfo print on that host), ``placement`` (listen address, the
library Ollama would pick), ``engine`` (state and generation), ``api`` (HTTP), ``logs`` and
``narrate`` (what it prints), ``cli`` (arguments and lifecycle).
"""

from llm_supervisor.simengine.cli import main

__all__ = ["main"]
