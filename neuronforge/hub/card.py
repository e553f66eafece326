"""A model card's YAML metadata (the `---` block of README.md), parsed safely and boundedly, always JSON-ready.

The Hub parses cards with a JavaScript YAML library and answers `cardData` as JSON, so every value here must survive
`json.dumps`: dates and `!!binary` stay the text they were written as, a `!!set` becomes a mapping (what YAML defines
it as), non-string keys become strings. The block is refused (CardError) above `MAX_FRONT_MATTER_BYTES`, nested deeper
than `MAX_DEPTH`, or when its aliases expand to more than `MAX_NODES` nodes: a 300-byte alias bomb would otherwise be
answered as megabytes of model_info (the expanded size is what costs, so that is what is bounded).
"""

from __future__ import annotations

import math
from typing import Any

import yaml

MAX_FRONT_MATTER_BYTES = 64 << 10
MAX_NODES = 20_000  # scalars, sequences and mappings, counting every alias at its expanded size
MAX_DEPTH = 64


class CardError(ValueError):
    """The card's metadata block is not valid (or not acceptable) YAML; the message says why."""


class _Loader(yaml.SafeLoader):
    """SafeLoader whose results are JSON-serialisable (see the module docstring)."""


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_str)
_Loader.add_constructor("tag:yaml.org,2002:binary", _Loader.construct_yaml_str)
_Loader.add_constructor("tag:yaml.org,2002:set", lambda loader, node: loader.construct_mapping(node))


def front_matter(readme: bytes) -> dict[str, Any] | None:
    """The YAML metadata block of a model card as a JSON-ready dict, None when the card has none."""
    text = readme.decode("utf-8", "replace").replace("\r\n", "\n")
    if not text.startswith("---\n"):
        return None
    end = text.find("\n---", 3)
    if end < 0:
        raise CardError("the metadata block opened with '---' is never closed (add a line '---' after it)")
    block = text[4:end]
    if len(block.encode()) > MAX_FRONT_MATTER_BYTES:
        raise CardError(f"the metadata block is larger than {MAX_FRONT_MATTER_BYTES} bytes; move prose below '---'")
    loader = _Loader(block)
    try:
        node = loader.get_single_node()
        if node is None:
            return {}
        _expanded_size(node, 0, {})
        data = loader.construct_document(node)
    except CardError:
        raise
    except RecursionError:
        raise CardError(f"the metadata block is nested deeper than {MAX_DEPTH} levels") from None
    except yaml.YAMLError as exc:
        raise CardError(" ".join(str(exc).split())) from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise CardError("the metadata block must be a YAML mapping (key: value lines)")
    return _jsonable(data)


def card_tags(card: dict[str, Any] | None) -> list[str]:
    """The card's `tags` as the Hub lists them: one string is one tag, non-strings are dropped, order kept."""
    tags = (card or {}).get("tags")
    if isinstance(tags, str):
        tags = [tags]
    if not isinstance(tags, list):
        return []
    return list(dict.fromkeys(t for t in tags if isinstance(t, str)))


def _expanded_size(node: yaml.Node, depth: int, sizes: dict[int, int]) -> int:
    """Nodes under `node` with every alias expanded (memoised per node, so a bomb costs its size, not its expansion)."""
    if depth > MAX_DEPTH:
        raise CardError(f"the metadata block is nested deeper than {MAX_DEPTH} levels (or an alias refers to itself)")
    known = sizes.get(id(node))
    if known is not None:
        return known
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(child, depth + 1, sizes) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            size += _expanded_size(key, depth + 1, sizes) + _expanded_size(value, depth + 1, sizes)
    if size > MAX_NODES:
        raise CardError(f"the metadata block expands to more than {MAX_NODES} values (YAML aliases); write it out")
    sizes[id(node)] = size
    return size


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {_key(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/Infinity
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if key is None:
        return "null"
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)
