"""aioveo.settings: every AIOVEO_* knob read once, overridable from code; the
completion engine's two modes compared in one process, end to end."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

import aioveo
from aioveo import _hub, settings


def test_defaults_environment_and_errors():
    s = settings.from_environ({})
    assert s == settings.Settings()
    s = settings.from_environ({"AIOVEO_ENGINE": "wait", "AIOVEO_SPOT_US": "0",
                               "AIOVEO_INLINE_TRANSFER": "4096"})
    assert (s.engine, s.spot_us, s.inline_transfer) == ("wait", 0.0, 4096)
    assert s.inline_transfer_bytes(True) == 4096
    assert settings.Settings().inline_transfer_bytes(True) == 1 << 20
    # (issue 11: on a VE a synchronous transfer queues behind the main
    # context's work, which other threads may keep busy: off by default)
    assert settings.Settings().inline_transfer_bytes(False) == 0
    with pytest.raises(ValueError, match="AIOVEO_SPOT_US"):
        settings.from_environ({"AIOVEO_SPOT_US": "fast"})
    with pytest.raises(ValueError, match="engine must be one of"):
        settings.from_environ({"AIOVEO_ENGINE": "spin"})
    with pytest.raises(ValueError, match="exit_grace must be >= 0"):
        settings.Settings(exit_grace=-1)
    assert set(settings.ENV) == {f"AIOVEO_{f.upper()}" for f in settings.Settings.__annotations__}


def test_override_restores_and_configure_per_loop():
    before = settings.current()
    with settings.override(spot_us=0.0) as s:
        assert s.spot_us == 0.0 and settings.current().spot_us == 0.0
    assert settings.current() == before
    loop = asyncio.new_event_loop()
    try:
        settings.configure(loop=loop, engine="wait")
        assert settings.for_loop(loop).engine == "wait"
        assert settings.current() == before
    finally:
        loop.close()


def test_a_bad_environment_value_stops_the_import_with_its_name():
    r = subprocess.run([sys.executable, "-c", "import aioveo"], capture_output=True, text=True,
                       env={**os.environ, "AIOVEO_EXIT_GRACE": "soon"})
    assert r.returncode != 0 and "AIOVEO_EXIT_GRACE" in r.stderr


@pytest.mark.parametrize("engine", ["poll", "wait"])
def test_both_engine_modes_end_to_end_in_one_process(aio_lib, engine):
    """Calls that finish later than the spot peek go through the engine; a
    cancelled call keeps its slot until the VE is done; closing works."""

    async def main():
        settings.configure(loop=asyncio.get_running_loop(), engine=engine, spot_us=0.0)
        async with aioveo.open_proc(0) as proc:
            lib = await proc.load_library(aio_lib)
            nap = lib.find_function("long sleep_ms(long)")
            add = lib.find_function("long add(long, long)")
            async with proc.open_context() as ctx:
                assert _hub.get_hub().engine.mode == engine
                assert await asyncio.gather(*(ctx.call(add, i, i) for i in range(50))) == \
                    [2 * i for i in range(50)]
                assert await ctx.call(nap, 20) == 20
                task = asyncio.ensure_future(ctx.call(nap, 100))
                await asyncio.sleep(0.02)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                assert ctx.in_flight == 1          # the VE still runs it
                await ctx.synchronize()
                assert ctx.in_flight == 0
                assert await ctx.map(add, [(i, 1) for i in range(100)]) == \
                    [i + 1 for i in range(100)]

    asyncio.run(main())
