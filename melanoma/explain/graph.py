"""The layer graph of a functional Keras model: who feeds whom.

Keras 3 has no public API for a layer's consumers, so the folding of batch norms and the
incremental occlusion read its private node lists. Every such access is here, in one class,
and tests/test_graph.py fails loudly if a Keras release changes them.
"""

from __future__ import annotations


class LayerGraph:
    """Who feeds whom in one model, from its own nodes only.

    A layer also lists the nodes of every other model that calls it, and Keras adds some silently:
    a model built from an inner tensor (the incremental occlusion's tail) calls every layer after it
    again. Those are not this model's edges, and must not change what its next plan or fold sees.
    """

    def __init__(self, model):
        self._nodes = {id(node) for nodes in model._nodes_by_depth.values() for node in nodes}

    def _inbound(self, layer) -> list:
        return [node for node in layer._inbound_nodes if id(node) in self._nodes]

    def producers(self, layer) -> list:
        """The layers whose outputs `layer` reads, when the model calls it exactly once; [] otherwise."""
        nodes = self._inbound(layer)
        if len(nodes) != 1:
            return []
        return [parent.operation for parent in nodes[0].parent_nodes]

    def consumers(self, layer) -> list:
        """The layers that read `layer`'s output in this model, one entry per call."""
        return [node.operation for node in layer._outbound_nodes if id(node) in self._nodes]

    def called_once(self, layer) -> bool:
        return len(self._inbound(layer)) == 1
