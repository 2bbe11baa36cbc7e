"""Image operations, one module per family, all declared in `registry`."""

from hotfolder.ops import color, engrave, geometry, output, vector  # noqa: F401  (registration)
from hotfolder.ops.registry import REGISTRY, Operation, Params, lookup, operation

__all__ = ["REGISTRY", "Operation", "Params", "lookup", "operation"]
