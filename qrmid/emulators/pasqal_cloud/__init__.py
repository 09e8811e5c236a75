"""An emulator of Pasqal Cloud Services: the Auth0 token endpoint and the core-fast batch/job API.

Run it as ``python -m qrmid.emulators.pasqal_cloud --port PORT [--host 127.0.0.1] [--config FILE]``.
"""
