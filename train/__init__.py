"""The offline training pipeline: `python -m train.run` and `python -m train.evaluate`."""
