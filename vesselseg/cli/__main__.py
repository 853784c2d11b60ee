"""``python -m vesselseg.cli``."""

from vesselseg.cli import main

main()
