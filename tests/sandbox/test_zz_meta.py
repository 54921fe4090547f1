"""The battery must really have run: a machine where every sandbox layer was skipped proves
nothing, so this fails instead of passing quietly. (Named to run after the battery.)"""

from __future__ import annotations

import anyio

from tether.sandbox import DEFAULT_PROFILE, Sandbox

from .sandbox_support import ESCAPE_OUTCOMES


def test_the_escape_battery_ran_on_real_layers() -> None:
    ran = [nodeid for nodeid, outcome in ESCAPE_OUTCOMES.items() if outcome != "skipped"]
    if ESCAPE_OUTCOMES:
        assert ran, ("every escape test was skipped: install bubblewrap "
                     "(apt-get install bubblewrap); `tether doctor` lists what is missing")
    # Run alone, or after the battery: this machine must enforce the default profile.
    sandbox = Sandbox()
    assert sandbox.layers.problems(DEFAULT_PROFILE) == []
    result = anyio.run(lambda: sandbox.run(["/bin/sh", "-c", "exit 7"]))
    assert result.exit_code == 7
