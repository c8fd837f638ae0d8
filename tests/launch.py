"""How tests start a command they then stop by signal: with the dispositions a terminal gives.

A child inherits the signals its parent ignores. pytest started as ``cmd &`` by a shell without
job control ignores SIGINT, and each in-process Dagster run copies SIGINT's handler to SIGTERM
(``dagster._utils.interrupts.setup_interrupt_handlers``), so after such a test a ``make`` started
plainly would ignore SIGTERM too: make keeps a signal ignored that it found ignored, and passes
it to nothing. The test would then fail for how pytest was launched, not for what it tries.
"""

DEFAULT_SIGNALS = ("env", "--default-signal=HUP,INT,QUIT,TERM")
"""coreutils' ``env`` resets these to their default action, then runs the command."""
