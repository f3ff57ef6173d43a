"""``python -m lab`` runs the CLI."""

from lab.cli.app import main

main()
