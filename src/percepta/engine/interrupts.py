"""SIGINT / SIGTERM during training: finish the current iteration, write ``last.pt``, say how
to resume.

:class:`StopOnSignals` replaces the two handlers for the duration of ``Trainer.fit`` (main
thread only; a signal the process ignores, as background jobs ignore SIGINT, stays ignored) and
records the first signal; a second one stops at once (``KeyboardInterrupt``).
Under DDP the ranks agree each iteration, so every rank enters the (collective) final save at
the same iteration.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from percepta.engine import distributed as pdist
from percepta.engine.hooks import TrainingError
from percepta.engine.logging import console

__all__ = ["StopOnSignals", "TrainingInterrupted"]


class TrainingInterrupted(TrainingError):
    """SIGINT/SIGTERM stopped training; ``last.pt`` was written and the message says how to
    resume. ``exit_code`` is the shell's convention (130 for SIGINT, 143 for SIGTERM)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class StopOnSignals:
    """Context manager: while active, SIGINT/SIGTERM only set :attr:`signum`."""

    def __init__(self, announce: bool = True) -> None:
        self.signum: int | None = None
        self.announce = announce
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(sig) is signal.SIG_IGN:  # e.g. a background job: respected
                    continue
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:  # a second signal: stop now
            signal.signal(signum, self._old.get(signum, signal.SIG_DFL))
            raise KeyboardInterrupt
        self.signum = signum
        if self.announce:
            console(
                f"[percepta] {signal.Signals(signum).name} received: stopping after this "
                "iteration and writing last.pt (send it again to stop now)"
            )

    def requested(self, world_size: int = 1) -> bool:
        """Whether to stop now (any rank got a signal; a collective when distributed)."""
        if world_size > 1:
            got = [s for s in pdist.all_gather_object(self.signum) if s is not None]
            if got and self.signum is None:
                self.signum = got[0]
        return self.signum is not None

    def error(
        self, iteration: int, max_iters: int, path: Any, name: str, output_dir: str
    ) -> TrainingInterrupted:
        """The error that ends an interrupted ``fit`` (after ``last.pt`` was written)."""
        signum = int(self.signum or signal.SIGINT)
        return TrainingInterrupted(
            f"training interrupted ({signal.Signals(signum).name}) at iteration "
            f"{iteration}/{max_iters}; {path} written. Resume with the same command plus "
            f"resume=true (run {name!r} in {output_dir})",
            exit_code=128 + signum,
        )
