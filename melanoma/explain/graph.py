"""The layer graph of a functional Keras model: who feeds whom.

Keras 3 has no public API for a layer's consumers, so the folding of batch norms and the
incremental occlusion read its private node lists. Every such access is here, in two functions,
and tests/test_graph.py fails loudly if a Keras release changes them.
"""

from __future__ import annotations


def producers(layer) -> list:
    """The layers whose outputs `layer` reads, when it is called exactly once; [] otherwise."""
    nodes = layer._inbound_nodes
    if len(nodes) != 1:
        return []
    return [parent.operation for parent in nodes[0].parent_nodes]


def consumers(layer) -> list:
    """The layers that read `layer`'s output, one entry per call."""
    return [node.operation for node in layer._outbound_nodes]


def called_once(layer) -> bool:
    return len(layer._inbound_nodes) == 1
