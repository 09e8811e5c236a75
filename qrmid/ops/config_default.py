"""The embedded default config written out as TOML, every key with its description and bounds as a comment.

Read back by the config loader it gives the same settings as no file at all (for the user who printed it: the
socket and journal paths depend on who runs the daemon). Keys unset by default are shown commented out.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from qrmid.ops.config import BOUND_WORDS, ClusterSettings, Config

WIDTH = 100  # comments wrap at this column
PATH_NOTES = {("daemon", "socket"): "/run/qrmid/qrmid.sock for root, else under $XDG_RUNTIME_DIR (or /tmp)",
              ("journal", "path"): "/var/lib/qrmid/journal.db for root, else under $XDG_STATE_HOME (or "
                                   "~/.local/state)"}


def render(config: Config | None = None) -> str:
    """``config`` (the embedded default when None) as commented TOML."""
    config = config or Config()
    out = ["# qrmid config: the embedded default, i.e. what `qrmid serve` uses without --config.",
           "# A file may leave out any section or key: it takes the value shown here. Check a file with",
           "# `qrmid config check FILE`; README.md (Configuration) and docs/ explain each section.", ""]
    for name in Config.model_fields:
        value = getattr(config, name)
        if name == "resources":
            out += _resources(value)
        elif value is None:
            out += _cluster()
        else:
            out += _section(name, value)
    return "\n".join(out).rstrip() + "\n"


def _section(name: str, section: BaseModel) -> list[str]:
    out = [*_doc(type(section)), f"[{name}]"]
    tables: list[tuple[str, list[BaseModel]]] = []
    for key, info in type(section).model_fields.items():
        value = getattr(section, key)
        if isinstance(value, list) and value and isinstance(value[0], BaseModel):
            tables.append((key, value))
            continue
        out += _key(info.alias or key, value, info, PATH_NOTES.get((name, key)))
    for key, items in tables:
        out += ["", f"# {type(section).model_fields[key].description}"]
        for index, item in enumerate(items):
            out.append(f"[[{name}.{key}]]")
            for field, info in type(item).model_fields.items():
                out += _key(field, getattr(item, field), info, described=not index)
    return [*out, ""]


def _cluster() -> list[str]:
    """Off by default: the section commented out, each key with its default."""
    out = [*_doc(ClusterSettings), "# [cluster]"]
    for key, info in ClusterSettings.model_fields.items():
        value = None if info.is_required() or info.default_factory else info.default
        lines = _key(key, value, info)
        if info.is_required():
            lines[-1] = f"# {key} = (required)"
        out += [line if line.startswith("#") else f"# {line}" for line in lines]
    return [*out, ""]


def _resources(resources: list[Any]) -> list[str]:
    out = ["# [[resources]]: one table per resource; leaving them all out serves these two. Each type has keys",
           "# of its own (README.md: Configuration)."]
    for resource in resources:
        out += ["", "[[resources]]"]
        fields = type(resource).model_fields
        for key in ("type", "name"):  # first, as people write them
            out += _key(key, getattr(resource, key), fields[key])
        for key, info in fields.items():
            if key not in ("type", "name"):
                out += _key(info.alias or key, getattr(resource, key), info)
    return [*out, ""]


def _doc(model: type[BaseModel]) -> list[str]:
    text = " ".join((model.__doc__ or "").replace("``", "").split())
    return [f"# {line}" for line in textwrap.wrap(text, WIDTH - 2)]


def _key(key: str, value: Any, info: FieldInfo, note: str | None = None, described: bool = True) -> list[str]:
    """A ``key = value`` line after its description; commented out when the key is unset."""
    text = "; ".join(part for part in (info.description, note, _bounds(info)) if part) if described else ""
    lines = [f"# {line}" for line in textwrap.wrap(text, WIDTH - 2)]
    if value is None or (isinstance(value, SecretStr) and not value.get_secret_value()):
        return [*lines, f"# {key} = (unset by default)"]
    return [*lines, tomli_w.dumps({key: _plain(value)}).strip()]


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return value


def _bounds(info: FieldInfo) -> str:
    bounds = [(word, getattr(item, name)) for item in info.metadata for name, word in BOUND_WORDS.items()
              if getattr(item, name, None) is not None]
    return " and ".join(f"{word} {int(value) if float(value).is_integer() else value}" for word, value in bounds)
