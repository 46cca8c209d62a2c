"""State: what a run folder remembers between processes.

Holds the run state under `DIR/.personaloom/` (`run_state`: manifest, batch markers,
events) and the run and release locks (`lock`). Both `run` and `publish` use them, so they
sit below both.

May import: the shared floor only.
"""
