"""Turn SIGINT and SIGTERM into a flag that the fit loop checks after every chunk.

The loop stops at the next chunk boundary, at most `log_every` steps later, so
no write is cut in half. The command then exits with 128 + signal.
"""

import logging
import signal
import threading

from cubicfit.errors import Interrupted

log = logging.getLogger(__name__)


class ForcedStop(BaseException):
    """A second SIGINT/SIGTERM: stop now, without finishing the chunk.

    It derives from BaseException, because logging's handlers catch `Exception` and would
    swallow it. The command line maps it to exit code 128 + signal.
    """

    def __init__(self, signal_number: int):
        super().__init__(f"stopped at once by a second signal {signal_number}")
        self.signal_number = signal_number


class StopFlag:
    def __init__(self):
        self.signal_number: int | None = None

    def raise_if_set(self) -> None:
        if self.signal_number is not None:
            raise Interrupted(self.signal_number)


def install_handlers(flag: StopFlag):
    """Set `flag` on SIGINT/SIGTERM; a second signal of either kind ends the process at once.

    Return a function that restores the previous handlers.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}

    def handle(number, frame):
        if flag.signal_number is not None:
            raise ForcedStop(number)
        flag.signal_number = number
        log.warning("received %s; stopping at the end of the current chunk",
                    signal.Signals(number).name)

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)

    def restore():
        for number, handler in previous.items():
            signal.signal(number, handler)

    return restore
