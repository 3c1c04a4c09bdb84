"""Settings declared once: a config dataclass's field carries its default, its help text and its
command-line flags; the CLI builds its options from them (`tweetlm.cli.options`) and the web form its
fields, so a new setting is one line in its config."""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any


def option(default: Any, help: str, *flags: str, label: str | None = None) -> Any:
    """A config field: its default, help text and flags (`--name`, `--name/--no-name` for switches,
    short ones after); `label` is what a form calls it (default: the help text)."""
    return field(default=default, metadata={"help": help, "flags": flags, "label": label or help})


def option_fields(cls: Any, names: tuple[str, ...] | None = None) -> list[dataclasses.Field[Any]]:
    """The fields of `cls` declared with `option` (all, or those in `names`, in that order)."""
    declared = {f.name: f for f in dataclasses.fields(cls) if "flags" in f.metadata}
    return [declared[n] for n in names] if names is not None else list(declared.values())


def defaults(cls: Any) -> dict[str, Any]:
    """Each option's default, by field name."""
    return {f.name: f.default for f in option_fields(cls)}
