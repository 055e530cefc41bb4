"""The functions a program may call. Importing this package registers every tool.

A developer adds a tool by adding one decorated function (``@tool``) in a module here
that is imported below: the prompt API text, the sandbox namespace, argument validation
and the tool table of docs/tools.md all derive from the registry.
"""

from viper_rs.tools import core, filters, spatial  # noqa: F401  (registration side effects)
from viper_rs.tools.context import ToolContext, current, parse_phrase, use_context
from viper_rs.tools.registry import REGISTRY, Registry, Tool, tool

__all__ = ["REGISTRY", "Registry", "Tool", "ToolContext", "current", "parse_phrase", "tool", "use_context"]
