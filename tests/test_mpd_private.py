"""python-mpd2's private part that ytproxy.private.mpd overrides is still there."""

from __future__ import annotations

import inspect

from mpd.asyncio import MPDClient

from ytproxy.private.mpd import IDLE_RESULT, QuietMPDClient


def test_the_idle_result_callback_is_still_the_one_overridden() -> None:
    original = getattr(MPDClient, IDLE_RESULT, None)
    assert callable(original), (
        f"python-mpd2 changed MPDClient: it has no {IDLE_RESULT} any more; "
        "ytproxy.private.mpd.QuietMPDClient must follow it")
    params = list(inspect.signature(original).parameters)
    assert params == ["self", "result"], (
        f"python-mpd2 changed {IDLE_RESULT}{params}: "
        "ytproxy.private.mpd.QuietMPDClient must follow it")
    source = inspect.getsource(original)
    assert "add_done_callback" in inspect.getsource(MPDClient) and "result" in source, (
        f"python-mpd2 no longer registers {IDLE_RESULT} as a done-callback: "
        "ytproxy.private.mpd.QuietMPDClient must follow it")
    assert getattr(QuietMPDClient, IDLE_RESULT) is not original
