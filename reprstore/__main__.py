"""``python -m reprstore`` runs the command line."""

from reprstore.cli import main

main()
