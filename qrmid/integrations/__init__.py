"""Qiskit primitives, a Pulser connection and their shared blocking connection to qrmid.

``qrmid.integrations.qiskit``: ``SamplerV2``, ``EstimatorV2``, ``get_backend``; ``qrmid.integrations.pulser``:
``QrmidConnection``. Each imports its framework only when imported itself.
"""
