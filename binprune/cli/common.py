"""What every ``binprune`` verb shares: the parser class, value parsers, flags generated from the
config dataclasses, and the summary table printer.

Flags are generated from the fields of :mod:`binprune.config` (name, help, kind, choices, default),
so each default is written once, in the config. Every generated flag defaults to ``None``
("not given"), so a preset or a ``--config`` file can supply the value and the command line
overrides it.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from typing import Any, Callable, Iterable

__all__ = ["Parser", "PARSERS", "add_config_flags", "given_values", "flag_name", "summary_table",
           "fraction_or_number", "add_arch_flag", "register_arch"]


class Parser(argparse.ArgumentParser):
    """Argument errors as one line (what was wrong, where to look), without the usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def fraction_or_number(text: str) -> float:
    """A number, or a fraction written ``a/b`` (e.g. ``8/255``)."""
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            value = float(num) / float(den)
        else:
            value = float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (e.g. 0.1 or 8/255)") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _checked(kind: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        if kind.startswith("int"):
            try:
                value: Any = int(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        else:
            value = fraction_or_number(text)
        bounds = {"int+": (1, None), "int0": (0, None), "float+": (0, None), "float0": (0, None),
                  "fraction": (0, 1)}[kind]
        low, high = bounds
        if value < 0:
            raise argparse.ArgumentTypeError(f"{value} is negative")
        if value < low or (kind == "float+" and value == 0):
            raise argparse.ArgumentTypeError(f"{value} is not {'> 0' if kind == 'float+' else f'>= {low}'}")
        if high is not None and value >= high:
            raise argparse.ArgumentTypeError(f"{value} is outside [0, 1)")
        return value

    return parse


def _list(text: str) -> tuple[str, ...]:
    items = tuple(t.strip() for t in text.split(",") if t.strip())
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return items


PARSERS: dict[str, Callable[[str], Any]] = {
    "int+": _checked("int+"), "int0": _checked("int0"), "float+": _checked("float+"),
    "float0": _checked("float0"), "fraction": _checked("fraction"), "str": str, "list": _list,
}


def flag_name(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = f.default_factory()  # type: ignore[misc]
    else:
        return ""
    if value is None:
        return ""
    if isinstance(value, bool):
        return " (default: on)" if value else " (default: off)"
    if isinstance(value, (tuple, list)):
        return f" (default: {','.join(map(str, value))})"
    return f" (default: {value:g})" if isinstance(value, float) else f" (default: {value})"


def add_config_flags(group: Any, cls: type, *, skip: Iterable[str] = (), dest_prefix: str = "") -> dict[str, str]:
    """Add one flag per command-line field of config class ``cls``; returns ``{field: dest}``
    (``dest_prefix`` keeps two configs' fields of the same name apart in one parser)."""
    names = {}
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if not meta or not meta.get("cli") or f.name in skip:
            continue
        dest = dest_prefix + f.name
        help_text = meta["help"] + _default_text(f)
        if meta["kind"] == "bool":
            group.add_argument(flag_name(f), dest=dest, action=argparse.BooleanOptionalAction, default=None,
                               help=help_text)
        else:
            group.add_argument(flag_name(f), dest=dest, type=PARSERS[meta["kind"]], choices=meta.get("choices"),
                               default=None, help=help_text,
                               metavar=None if meta.get("choices") else ("N" if meta["kind"].startswith("int") else "X"))
        names[f.name] = dest
    return names


def given_values(args: argparse.Namespace, names: dict[str, str]) -> dict[str, Any]:
    """``{field: value}`` of the fields (``{field: dest}``) given on the command line."""
    return {field: getattr(args, dest) for field, dest in names.items() if getattr(args, dest, None) is not None}


def summary_table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def add_arch_flag(group: Any) -> None:
    """``--arch``: the user's factory behind a checkpoint (only needed for ``package.module:callable``)."""
    group.add_argument("--arch", metavar="MODULE:CALLABLE",
                       help="the checkpoint was built from your own factory package.module:callable: import it "
                            "(binprune never imports code a file names). torchvision:, timm: and robustbench: "
                            "models need no flag")


def register_arch(name: str | None) -> None:
    """Import and register the user's factory named on the command line (other names: nothing to do)."""
    if name is None:
        return
    from ..zoo import is_user_factory

    if is_user_factory(name):
        from ..models import register_factory

        register_factory(name)
