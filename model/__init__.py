"""Delay spiking neural networks: features, neuron, delay layer, network and checkpoints.

``model.features`` is importable without torch (the service uses it); the rest needs torch.
"""
