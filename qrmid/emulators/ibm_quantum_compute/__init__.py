"""Emulator of the IBM Quantum Platform REST API (``/api/v1``, the IBM Quantum Compute Service that QRMI's
``ibm-quantum-compute-service`` type drives): IAM tokens, backends, jobs run on qiskit-aer, results and logs.

Only what QRMI's client calls is served; it exists to test qrmid's ``qrmi`` resources end to end.
"""
