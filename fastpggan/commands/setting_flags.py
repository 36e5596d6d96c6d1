"""Command-line flags made from setting declarations (:mod:`fastpggan.training.settings`).

:func:`add_setting_flags` adds one ``argparse`` flag per declared flag of a settings dataclass,
in field order, its default and help as declared; :func:`flag_values` turns the parsed flags
back into field values through each flag's ``parse``. A bad value is a
:class:`~fastpggan.errors.UsageError` of one line naming the flag, raised in one place.
"""

from __future__ import annotations

import argparse
from typing import Any

from fastpggan.errors import UsageError
from fastpggan.training.settings import FIELD_DEFAULT, Flag, declared, field_default, field_type


def _flags(cls: type) -> dict[str, Flag]:
    return {name: s.flag for name, s in declared(cls).items() if s.flag is not None}


def add_setting_flags(p: argparse.ArgumentParser, cls: type) -> None:
    """Add the flag of every setting of ``cls`` that has one."""
    for name, flag in _flags(cls).items():
        kw: dict[str, Any] = {
            "help": flag.help() if callable(flag.help) else flag.help,
            "default": field_default(cls, name) if flag.default is FIELD_DEFAULT else flag.default,
        }
        kind = field_type(cls, name) if flag.action is None and flag.choices is None else None
        for key, value in (("type", kind), ("metavar", flag.metavar), ("choices", flag.choices),
                           ("action", flag.action), ("dest", flag.dest)):
            if value is not None:
                kw[key] = value
        p.add_argument(flag.name, **kw)


def flag_values(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """Field -> value for every setting of ``cls`` with a flag: the parsed flag through its
    ``parse``. ``UsageError`` (one line, naming the flag) on the first value a parse refuses."""
    values = {}
    for name, flag in _flags(cls).items():
        value = getattr(args, flag.attr)
        try:
            values[name] = flag.parse(value) if flag.parse is not None else value
        except ValueError as e:
            text = str(e)
            raise UsageError(text if text.startswith(flag.name) else f"{flag.name}: {text}") from None
    return values
