"""Image operations, one module per family, all declared in `registry`."""

from hotfolder.ops import (  # noqa: F401  (registration)
    background,
    color,
    engrave,
    geometry,
    output,
    proof,
    vector,
)
from hotfolder.ops.registry import REGISTRY, Operation, Params, lookup, operation

__all__ = ["REGISTRY", "Operation", "Params", "lookup", "operation"]
