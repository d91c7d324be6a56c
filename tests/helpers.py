"""Small helpers shared by the test modules (``from helpers import declare``)."""
from __future__ import annotations

from typing import Any


def declare(lib: Any, name: str, args: list[str], ret: str = "long") -> Any:
    """``lib``'s function `name`, declared PyVEO style (args_type, ret_type)."""
    fn = lib.find_function(name)
    fn.args_type(*args)
    fn.ret_type(ret)
    return fn
