"""The commands, the top layer: ``train``, ``generate`` and ``evaluate`` (``python -m fastpggan``).

Modules: :mod:`.train`, :mod:`.generate`, :mod:`.evaluate` (one per command: its flags, its
checks before anything is written, its work) and :mod:`.common` (the flag checks they share).
Nothing below this package imports it; the commands share pieces only through :mod:`.common`.
"""
