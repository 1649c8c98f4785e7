"""Import TensorFlow without its start-up noise on the terminal.

On a machine without a GPU, TensorFlow's C++ side prints oneDNN notes, "Could not find cuda
drivers" and "failed call to cuInit" before any output; a newcomer reads them as failures. They
are written to file descriptor 2 before Python's logging is involved, so the command-line tools
point that descriptor at /dev/null while TensorFlow imports and looks for devices, and restore it
at once. Its Python logger is then held to errors: every model's predict function traces its own
input shapes, and the combined reading's members together trip TensorFlow's "triggered
tf.function retracing" warning, which reads as a fault in the user's command. `--framework-logs`
keeps everything, for debugging.
"""

from __future__ import annotations

import argparse
import logging
import os

FRAMEWORK_LOGS_FLAG = "--framework-logs"


def add_framework_logs_option(parser: argparse.ArgumentParser) -> None:
    """The one option every command-line tool shares for seeing TensorFlow's own start-up lines."""
    parser.add_argument(FRAMEWORK_LOGS_FLAG, action="store_true", help="show TensorFlow's start-up logs (debugging)")


def import_tensorflow_quietly() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    devnull = os.open(os.devnull, os.O_WRONLY)
    saved = os.dup(2)
    try:
        os.dup2(devnull, 2)
        import tensorflow as tf

        tf.config.list_physical_devices()  # device discovery is where cuInit complains
        tf.get_logger().setLevel(logging.ERROR)
    finally:
        os.dup2(saved, 2)
        os.close(devnull)
        os.close(saved)
