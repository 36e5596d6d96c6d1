"""How a run's setting is declared: its flag, help text, default, range and resume rule, in one place.

Each field of :class:`~fastpggan.training.config.TrainConfig` is a :func:`setting`: a
``dataclasses.field`` whose metadata holds a :class:`Setting`. What used to repeat the field is
read from those declarations: the ``train`` flags and how their text becomes the field's value
(:mod:`fastpggan.commands.setting_flags`), the range checks (:mod:`.limits`) and the resume
policy (:mod:`.resume_policy`). This module sits below all of them (it imports only the base
layer), so each can use these types without a cycle.

A new numeric setting is one declaration, e.g. (``TrainConfig.ema_beta``)::

    ema_beta: float = setting(
        0.999, resume=MAY, limit=Limit(0.0, 1.0, hi_open=True),
        flag=Flag("--ema-beta", "per-step decay of the generator average used for samples "
                  "(default: %(default)s)", "B"))

plus the code that uses ``cfg.ema_beta``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastpggan.ranges import Limit

FIXED, SCHEDULE, MAY_CHANGE = "fixed", "schedule", "may change"


@dataclass(frozen=True)
class Rule:
    """What resuming a run may do to a setting (the kinds: :mod:`.resume_policy`)."""

    kind: str
    why: str = ""  # for FIXED: what the setting decides (said when a resume is refused)
    # When the setting matters at all, given the new config (as a dict); None: always.
    applies: Callable[[dict[str, Any]], bool] | None = None


MAY = Rule(MAY_CHANGE)  # takes effect from the first resumed step
WITH_SCHEDULE = Rule(SCHEDULE)  # only where the run's place in the schedule stays the same


def fixed(why: str, applies: Callable[[dict[str, Any]], bool] | None = None) -> Rule:
    """Must equal the checkpoint's value; ``why`` says what the setting decides."""
    return Rule(FIXED, why, applies)


class _FieldDefault:
    def __repr__(self) -> str:
        return "the field's default"


FIELD_DEFAULT: Any = _FieldDefault()


@dataclass(frozen=True)
class Flag:
    """A setting's command-line flag, in ``argparse.add_argument``'s terms, and how the value
    argparse gives becomes the field's.

    An ``int`` or ``float`` field's flag takes that type (argparse refuses other text); any
    other flag gives its text, or the ``choices`` entry, or what its ``action`` stores.
    ``default``: the value argparse gives when the flag is absent (the field's default unless
    said: ``"auto"`` or ``None`` where the field's value depends on more than the flag).
    ``help``: may be a function, called when the parser is built (a default of this machine).
    ``parse``: the flag's value -> the field's; a bad value raises ``ValueError`` with one line
    (the flag's name is put in front when the line does not start with it).
    ``dest``: argparse's attribute, when not the one argparse makes of ``name``."""

    name: str
    help: str | Callable[[], str]
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    default: Any = FIELD_DEFAULT
    action: Any = None
    dest: str | None = None
    parse: Callable[[Any], Any] | None = None

    @property
    def attr(self) -> str:
        """The attribute of the parsed ``argparse.Namespace`` that holds this flag's value."""
        return self.dest or self.name.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class Setting:
    """One field's declaration: its resume rule, its range (numeric fields: the field's number,
    or each value of a per-resolution dict or tuple), and its flag (``None``: no flag sets it)."""

    rule: Rule
    limit: Limit | None = None
    flag: Flag | None = None


_KEY = "fastpggan.setting"


def setting(default: Any = dataclasses.MISSING, *, resume: Rule, limit: Limit | None = None,
            flag: Flag | None = None, factory: Callable[[], Any] | None = None) -> Any:
    """A dataclass field declared as a setting (``factory``: a ``default_factory``); ``resume``
    is required, so that no setting slips past the resume policy."""
    meta = {_KEY: Setting(resume, limit, flag)}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def declared(cls: type) -> dict[str, Setting]:
    """Every field of the dataclass ``cls`` -> its declaration, in field order; ``TypeError``
    naming a field not declared with :func:`setting`."""
    out = {}
    for f in dataclasses.fields(cls):
        if _KEY not in f.metadata:
            raise TypeError(f"{cls.__name__}.{f.name} is not declared with setting()")
        out[f.name] = f.metadata[_KEY]
    return out


def field_default(cls: type, name: str) -> Any:
    """The default of field ``name`` of ``cls`` (a fresh one for a ``default_factory``)."""
    f = cls.__dataclass_fields__[name]
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def field_type(cls: type, name: str) -> Any:
    """``int`` or ``float`` when field ``name`` of ``cls`` is annotated so, else ``None``."""
    kind = cls.__dataclass_fields__[name].type
    return {"int": int, "float": float, int: int, float: float}.get(kind)


def flag_name(cls: type, name: str) -> str:
    """The flag that sets field ``name`` of ``cls`` (the field's name when no flag does)."""
    flag = declared(cls)[name].flag
    return flag.name if flag is not None else name


def limits(cls: type) -> dict[str, Limit]:
    """Field -> range, for every field of ``cls`` declared with one."""
    return {name: s.limit for name, s in declared(cls).items() if s.limit is not None}


def rules(cls: type) -> dict[str, Rule]:
    """Field -> resume rule, for every field of ``cls``."""
    return {name: s.rule for name, s in declared(cls).items()}
