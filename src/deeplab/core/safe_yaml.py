"""A YAML file as plain data, safely: PyYAML's safe loader, with duplicate keys and alias bombs
("billion laughs") refused in one line naming the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

MAX_YAML_VALUES = 100_000  # after alias expansion; params.yaml holds about 200


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses duplicate keys (naming both lines)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)):
                continue  # unhashable keys: the schema refuses them
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(f"{self.name}: key '{key}' appears twice in one mapping "
                                  f"(lines {seen[key]} and {line}); keep one")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node: yaml.Node, limit: int) -> int:
    """How many values `node` stands for once every alias is expanded (stops past `limit`)."""
    memo: dict[int, int] = {}

    def size(n: yaml.Node) -> int:
        if id(n) in memo:
            return memo[id(n)]
        memo[id(n)] = limit + 1  # a cycle counts as too big
        if isinstance(n, yaml.MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in n.value)
        elif isinstance(n, yaml.SequenceNode):
            total = 1 + sum(size(v) for v in n.value)
        else:
            total = 1
        memo[id(n)] = total = min(total, limit + 1)
        return total

    return size(node)


def read_yaml(path: Path) -> Any:
    """A YAML file as plain data: duplicate keys and alias bombs are errors naming the file."""
    text = path.read_text()
    loader = _StrictLoader(text)
    loader.name = str(path)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, MAX_YAML_VALUES) > MAX_YAML_VALUES:
            raise ConfigError(f"{path}: its aliases expand to more than {MAX_YAML_VALUES:,} values "
                              f"(a 'billion laughs' file?); refusing to read it")
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    finally:
        loader.dispose()

