"""Bash and zsh completion for ``llm-supervisorctl``, written from its own argument parser (so
it can never list a command or an option the CLI does not have). The package installs the
outputs as ``/usr/share/bash-completion/completions/llm-supervisorctl`` and
``/usr/share/zsh/vendor-completions/_llm-supervisorctl`` (zsh runs the bash one through its
``bashcompinit``):

    python -m llm_supervisor.control.completion [bash|zsh] > FILE

Tiers complete after ``pin ENGINE`` and ``--tier``, engines after the commands that take one
and ``--engine``, service units after ``adopt``, files only where a file goes.

Engine names are completed from the config files (``name = "…"`` in
``/etc/llm-supervisor/supervisor.toml`` and ``conf.d/*.toml``): no daemon needed.
"""

from __future__ import annotations

import argparse
import shlex

from llm_supervisor.control.cli import parser
from llm_supervisor.tiers import TIERS

HEADER = "# bash completion for llm-supervisorctl: generated from its parser; do not edit\n"


def commands(p: argparse.ArgumentParser) -> dict[str, list[str]]:
    """Each subcommand (and its nested ones, as ``models export``) -> its options."""
    found: dict[str, list[str]] = {}
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[name] = sorted({o for a in sub._actions for o in a.option_strings
                                      if o.startswith("--")})
                for nested, options in commands(sub).items():
                    found[f"{name} {nested}"] = options
    return found


def engine_commands(p: argparse.ArgumentParser) -> list[str]:
    """The subcommands whose first positional argument is an engine's name (``engine``): the
    operator's verbs (``intents.Verb``, through the parser), ``status``, ``render``, …"""
    found = []
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                first = next((a for a in sub._actions if not a.option_strings), None)
                if first is not None and first.dest == "engine":
                    found.append(name)
    return found


def bash() -> str:
    p = parser()
    table = commands(p)
    top = sorted(c for c in table if " " not in c)
    cases = "\n".join(f"        {shlex.quote(c)}) opts={shlex.quote(' '.join(o))} ;;"
                      for c, o in sorted(table.items()))
    nested = "\n".join(
        f"        {c}) subs={shlex.quote(' '.join(n.split(' ', 1)[1] for n in table if n.startswith(c + ' ')))} ;;"  # noqa: E501
        for c in top if any(n.startswith(c + " ") for n in table))
    return HEADER + f"""_llm_supervisorctl_engines() {{
    local dir=${{LLM_SUPERVISOR_CONFIG_DIR:-/etc/llm-supervisor}}
    cat "$dir/supervisor.toml" "$dir"/conf.d/*.toml 2>/dev/null |
        sed -n 's/^[[:space:]]*name[[:space:]]*=[[:space:]]*"\\([A-Za-z0-9_-]*\\)".*/\\1/p'
}}

_llm_supervisorctl() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} cmd="" sub="" opts="" subs="" i
    for ((i = 1; i < COMP_CWORD; i++)); do
        case ${{COMP_WORDS[i]}} in
            -*) ;;
            *) if [ -z "$cmd" ]; then cmd=${{COMP_WORDS[i]}}
               elif [ -z "$sub" ]; then sub=${{COMP_WORDS[i]}}; fi ;;
        esac
    done
    if [ -z "$cmd" ]; then
        COMPREPLY=($(compgen -W "{' '.join(top)} --help" -- "$cur"))
        return
    fi
    case $cmd in
{nested}
    esac
    if [ -n "$subs" ] && [ -z "$sub" ] && [[ $cur != -* ]]; then
        COMPREPLY=($(compgen -W "$subs" -- "$cur"))
        return
    fi
    case "$cmd${{sub:+ $sub}}" in
{cases}
    esac
    local prev=${{COMP_WORDS[COMP_CWORD-1]}}
    case $prev in
        --engine) COMPREPLY=($(compgen -W "$(_llm_supervisorctl_engines)" -- "$cur")); return ;;
        --tier) COMPREPLY=($(compgen -W "{' '.join(TIERS)}" -- "$cur")); return ;;
        -o|--output|--config|--models-dir|--socket) COMPREPLY=($(compgen -f -- "$cur")); return ;;
    esac
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$opts --help" -- "$cur"))
    elif [[ " {' '.join(engine_commands(p))} " == *" $cmd "* ]] && [ -z "$sub" ]; then
        COMPREPLY=($(compgen -W "$(_llm_supervisorctl_engines)" -- "$cur"))
    elif [ "$cmd" = pin ] && [ -n "$sub" ]; then  # pin ENGINE TIER
        COMPREPLY=($(compgen -W "{' '.join(TIERS)}" -- "$cur"))
    elif [ "$cmd" = adopt ] && [ -z "$sub" ]; then  # a unit to take over
        COMPREPLY=($(compgen -W "$(systemctl list-unit-files --type=service --no-legend \
            2>/dev/null | awk '{{print $1}}')" -- "$cur"))
    elif [ "$cmd" = check-config ] || [ "$cmd $sub" = "models import" ]; then
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
}}
complete -F _llm_supervisorctl llm-supervisorctl
"""


def zsh() -> str:
    """The bash completion, run by zsh's ``bashcompinit``."""
    return ("#compdef llm-supervisorctl\n" + HEADER.replace("bash completion", "zsh completion")
            + "autoload -U +X bashcompinit && bashcompinit\n" + bash().removeprefix(HEADER))


if __name__ == "__main__":
    import sys

    print(zsh() if sys.argv[1:] == ["zsh"] else bash(), end="")
