"""`python -m dsacache ...` runs the CLI (where the console script is not installed)."""

from dsacache.cli.app import main

main()
