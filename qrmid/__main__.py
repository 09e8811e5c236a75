"""``python -m qrmid`` runs the qrmid command."""

from qrmid.cli import main

main()
