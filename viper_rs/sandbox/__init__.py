"""Sandbox for model-written programs: static validation plus isolated worker processes.

``validate_program`` is layer 1 (AST whitelist); :class:`Sandbox` is layer 2 (a pool of
separate, resource-limited worker processes that reach tools only through the parent).
``run_inprocess`` runs the same runtime without isolation, for benchmarks and debugging.
"""

from viper_rs.sandbox.pool import Handler, Limits, Sandbox, SandboxResult, run_inprocess
from viper_rs.sandbox.validate import ALLOWED_BUILTINS, validate_program

__all__ = [
    "ALLOWED_BUILTINS",
    "Handler",
    "Limits",
    "Sandbox",
    "SandboxResult",
    "run_inprocess",
    "validate_program",
]
