"""The offline pipeline: `python -m train.run`, `train.evaluate`, `train.calibrate`, `train.combine`,
`train.gate_check`.

Each tool imports TensorFlow at module level (through Keras), before its arguments are parsed, so
the package imports it quietly first (melanoma.framework); `--framework-logs`, which every tool
accepts, keeps TensorFlow's start-up lines for debugging.
"""

import sys

from melanoma.framework import FRAMEWORK_LOGS_FLAG, import_tensorflow_quietly

if FRAMEWORK_LOGS_FLAG not in sys.argv:
    import_tensorflow_quietly()
