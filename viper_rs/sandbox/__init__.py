"""Sandbox for model-written programs: static validation plus isolated worker processes.

``validate_program`` is layer 1 (AST whitelist); :class:`Sandbox` is layer 2 (a pool of
separate, resource-limited worker processes that reach tools only through the parent).
``run_inprocess`` runs the same runtime without isolation, for benchmarks and debugging.

One idea per module: ``limits`` (Limits, SandboxResult), ``dispatch`` (the parent's side of
tool calls), ``inprocess``, ``process`` (one worker process seen from the parent), ``pool``
(the warm pool and :class:`Sandbox`), ``worker`` (the worker's own script and runtime: one
file because it runs standalone under ``python -I -S``, importing nothing of the package).
"""

from viper_rs.sandbox.dispatch import Handler
from viper_rs.sandbox.inprocess import run_inprocess
from viper_rs.sandbox.limits import Limits, SandboxResult
from viper_rs.sandbox.pool import Sandbox
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
