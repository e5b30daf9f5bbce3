"""The engine measures its own rate and ETA per stage (RunContext.progress): what the pod's
progress annotation carries into status.throughputPerSecond and estimatedRemainingSeconds."""

from __future__ import annotations

import pytest

from gpubatch_jobs import runtime
from gpubatch_jobs.runtime import RunContext, format_eta, progress_line


def test_rate_and_eta_are_measured_from_the_stage_s_first_report(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = {"now": 100.0}
    monkeypatch.setattr(runtime.time, "monotonic", lambda: clock["now"])
    events: list[dict] = []
    ctx = RunContext(progress_sinks=[events.append], progress_interval_s=0)
    ctx.progress(0, 1000, stage="render")
    clock["now"] = 110.0
    ctx.progress(200, 1000, stage="render")
    assert "perSecond" not in events[0]
    assert events[1]["perSecond"] == 20.0 and events[1]["etaSeconds"] == 40.0
    clock["now"] = 111.0
    ctx.progress(5, 50, stage="write")  # a new stage starts its own measure
    assert "etaSeconds" not in events[2]
    clock["now"] = 116.0
    ctx.progress(30, 50, stage="write")
    assert events[3]["perSecond"] == 5.0 and events[3]["etaSeconds"] == 4.0


def test_the_bar_shows_the_eta_until_done() -> None:
    assert progress_line(200, 1000, "render", 40.0).endswith("200/1000 20% render ETA 40s")
    assert "ETA" not in progress_line(1000, 1000, "render", 0.0)
    assert format_eta(65) == "1m05s" and format_eta(3725) == "1h02m" and format_eta(None) == ""
