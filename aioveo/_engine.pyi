"""Type stubs of aioveo._engine (the completion engine, _ext/engine/_engine.pyx).

Checked against the built module by tests/test_typing.py (mypy.stubtest)."""
from typing import Final, TypedDict

from typing_extensions import disjoint_base

POLL: Final = 0
WAIT: Final = 1

class _Stats(TypedDict):
    wakeups: int
    rounds: int
    peeks: int

@disjoint_base
class Engine:
    """Completion detection off the event loop, handed back through an eventfd."""

    @property
    def mode(self) -> int: ...
    def __init__(self, lib_path: str, mode: int = 0, spin_us: int = 50,
                 max_sleep_us: int = 1000) -> None: ...
    def fileno(self) -> int: ...
    def watch(self, ctx: int, req_id: int, token: int) -> None:
        """Report request `req_id` of context `ctx` under `token` when done."""
    def drain(self) -> list[tuple[int, int, int]]:
        """Completed (token, status, retval) records, at most 1024 per call."""
    def forget(self, ctx: int, status: int = 2, timeout_ms: int = 5000) -> int:
        """Fail every request watched on `ctx` with `status` and stop watching it."""
    @property
    def pending(self) -> int: ...
    def stats(self) -> _Stats: ...
    def close(self, timeout_ms: int = 5000) -> None: ...
