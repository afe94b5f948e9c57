"""Public names loaded on first use: the module ``__getattr__`` of a package whose exports live in
its submodules.

The top-level package and the framework adapters use it so that importing them imports nothing
heavy (no pydantic, no LangGraph, no CrewAI) until a name is used. This module sits on the Claude
Code hook path: standard library only, no typing at run time.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable


def lazy_getattr(namespace: dict[str, Any], exports: dict[str, str]) -> Callable[[str], Any]:
    """A ``__getattr__`` for the package whose globals are ``namespace``: ``exports`` maps a public
    name to the submodule (relative to the package) that defines it. The submodule is imported on
    first use and the value cached in ``namespace``; an unknown name raises AttributeError."""
    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        module_name = exports.get(name)
        if module_name is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        from importlib import import_module

        value = getattr(import_module(f".{module_name}", package), name)
        namespace[name] = value
        return value

    return __getattr__
