"""Command-line options generated from a config dataclass's fields (their defaults, help and flags, as
`tweetlm.options.option` declares them), the way HfArgumentParser and TRL's TrlParser do."""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any

import typer

from tweetlm.options import option_fields


def config_options(
    cls: Any, names: tuple[str, ...] | None = None, helps: dict[str, str] | None = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a Typer command one option per field of `cls` (all `option` fields, or `names`); the command
    receives them, by field name, as the dict `options`. `helps` replaces a field's help text here."""
    fields = option_fields(cls, names)
    hints = typing.get_type_hints(cls)
    helps = helps or {}

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(command)
        own = [p for name, p in signature.parameters.items() if name != "options"]
        generated = [
            inspect.Parameter(
                f.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=typer.Option(f.default, *f.metadata["flags"], help=helps.get(f.name, f.metadata["help"])),
                annotation=hints[f.name],
            )
            for f in fields
        ]

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            options = {f.name: kwargs.pop(f.name) for f in fields}
            return command(**kwargs, options=options)

        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]
        first = [p for p in own if p.name == "ctx" or isinstance(p.default, typer.models.ArgumentInfo)]
        rest = [p for p in own if p not in first]
        wrapper.__signature__ = signature.replace(parameters=[*first, *generated, *rest])  # type: ignore[attr-defined]
        return wrapper

    return decorate
