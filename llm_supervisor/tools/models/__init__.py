"""Offline model bundles: an Ollama model in one verified .tar.zst (``llm-supervisorctl models
export|import``), safe as root on a tree the engine user owns.

``format`` (the bundle: Ollama's names and layout, limits, the streams that write and read
it), ``beneath`` (paths opened beneath a directory descriptor, never through a symlink),
``export`` and ``install`` (the models directory read and written; an import keeps an undo
journal of what it created), ``signals`` (held while an undo runs), ``cli`` (the command).
"""
