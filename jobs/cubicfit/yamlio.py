"""Strict YAML reading for configuration files and sweep specs.

PyYAML implements YAML 1.1, whose implicit typing surprises users: `1e-6`
(no dot) is a string, `no` and `on` are booleans, `0755` is an octal
integer, `2026-01-01` is a date. This loader resolves scalars the YAML 1.2
core-schema way instead: `true`/`false` are the only booleans, integers are
plain decimal without leading zeros, and any decimal float (with or without
a dot) is a float. Anything else stays a string, and the configuration
validator then rejects it by field name. Duplicate keys, aliases (`*name`)
and explicit tags other than the standard scalar/collection ones are errors.
Aliases are rejected because a few hundred bytes of nested aliases expand to
billions of values once an error message or a loop walks them.
"""

import re

import yaml

from cubicfit.errors import ConfigError

_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_INT = re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$")
_FLOAT = re.compile(
    r"^[-+]?(?:(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[0-9]+[eE][-+]?[0-9]+)$"
    r"|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"
)
_ALLOWED_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:seq",
    "tag:yaml.org,2002:map",
}


class StrictLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core-schema scalars, no duplicate keys and no custom tags."""


# Start from no implicit resolvers, so nothing from YAML 1.1 leaks in.
StrictLoader.yaml_implicit_resolvers = {}
StrictLoader.add_implicit_resolver("tag:yaml.org,2002:bool", _BOOL, list("tTfF"))
StrictLoader.add_implicit_resolver("tag:yaml.org,2002:null", _NULL, ["~", "n", "N", ""])
StrictLoader.add_implicit_resolver("tag:yaml.org,2002:int", _INT, list("-+0123456789"))
StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def _construct_bool(loader, node):
    return loader.construct_scalar(node).lower() == "true"


MAX_INTEGER_DIGITS = 1000  # far above any valid field; Python refuses str->int past 4300 digits


def _construct_int(loader, node):
    text = loader.construct_scalar(node)
    if len(text.lstrip("+-")) > MAX_INTEGER_DIGITS:
        raise ConfigError(
            f"{_where(node)}: an integer with {len(text)} digits is out of range for every field"
        )
    if not _INT.match(text):
        raise ConfigError(
            f"{_where(node)}: {text!r} is not a plain decimal integer; "
            "write it without leading zeros, underscores or a base prefix"
        )
    return int(text)


def _construct_float(loader, node):
    text = loader.construct_scalar(node)
    lowered = text.lower()
    if lowered.endswith(".inf"):
        return float("-inf") if lowered.startswith("-") else float("inf")
    if lowered == ".nan":
        return float("nan")
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{_where(node)}: {text!r} is not a number") from None


def _construct_mapping(loader, node, deep=False):
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError(f"{_where(node)}: expected a mapping")
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            raise ConfigError(f"{_where(key_node)}: key {key!r} must be a string")
        if key in seen:
            raise ConfigError(
                f"{_where(key_node)}: duplicate key '{key}' (first at line {seen[key]}); "
                "keep only one of them"
            )
        seen[key] = key_node.start_mark.line + 1
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


def _compose_node(loader, parent, index):
    if loader.check_event(yaml.AliasEvent):
        event = loader.peek_event()
        raise ConfigError(
            f"line {event.start_mark.line + 1}, column {event.start_mark.column + 1}: "
            f"YAML alias '*{event.anchor}' is not allowed; write the value out in full"
        )
    return yaml.SafeLoader.compose_node(loader, parent, index)


def _reject_tag(loader, tag_suffix, node):
    raise ConfigError(
        f"{_where(node)}: YAML tag '{node.tag}' is not allowed; "
        "configuration holds only plain strings, numbers, booleans, lists and mappings"
    )


def _where(node) -> str:
    return f"line {node.start_mark.line + 1}, column {node.start_mark.column + 1}"


StrictLoader.yaml_constructors = {
    "tag:yaml.org,2002:str": yaml.SafeLoader.construct_yaml_str,
    "tag:yaml.org,2002:null": yaml.SafeLoader.construct_yaml_null,
    "tag:yaml.org,2002:bool": _construct_bool,
    "tag:yaml.org,2002:int": _construct_int,
    "tag:yaml.org,2002:float": _construct_float,
    "tag:yaml.org,2002:seq": yaml.SafeLoader.construct_yaml_seq,
    "tag:yaml.org,2002:map": yaml.SafeLoader.construct_yaml_map,
    None: lambda loader, node: _reject_tag(loader, None, node),
}
StrictLoader.yaml_multi_constructors = {"": _reject_tag}
StrictLoader.construct_mapping = _construct_mapping
StrictLoader.compose_node = _compose_node


def load_yaml(text: str, source: str):
    """Parse one YAML document strictly; errors name `source` and the line."""
    try:
        documents = list(yaml.load_all(text, Loader=StrictLoader))  # noqa: S506 - StrictLoader is a SafeLoader
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None
    except RecursionError:
        raise ConfigError(
            f"{source}: the YAML is nested too deeply; a configuration needs at most a few levels"
        ) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(f"{source}: invalid YAML at {where}{problem}") from None
    if len(documents) > 1:
        raise ConfigError(f"{source}: contains {len(documents)} YAML documents; keep exactly one")
    return documents[0] if documents else None


def load_yaml_file(path: str):
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: file not found; pass the path of an existing YAML file"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read the file ({error})") from None
    return load_yaml(text, path)
