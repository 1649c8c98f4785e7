"""Reading a saved network (`.keras`), safe for a server that is stopped in the middle of a read.

Streamlit's script threads, and the threads they start, are daemons, and Python halts a daemon
thread wherever it stands once the interpreter starts finalizing. Halted inside h5py, it keeps
h5py's global lock, the interpreter waits for that lock while it frees h5py's objects, and the
process never exits (a browser test's server, still alive an hour after SIGTERM; a daemon thread
loading in a loop hung 2 exits in 6). Every read holds `_READING`, and exit takes it first and
keeps it: the interpreter finalizes between reads, never during one.
"""

from __future__ import annotations

import atexit
import threading
from pathlib import Path

_READING = threading.Lock()


def _let_the_read_in_progress_finish() -> None:
    _READING.acquire()  # never released: the interpreter is finalizing, no read may start


atexit.register(_let_the_read_in_progress_finish)


def load_network(path: str | Path):
    """The network saved at `path`, in Keras' safe mode and uncompiled, with the project's layers known."""
    import keras

    import melanoma.models.layers  # noqa: F401  registers the custom layers the models contain

    with _READING:
        return keras.models.load_model(path, safe_mode=True, compile=False)
