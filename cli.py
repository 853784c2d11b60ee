"""Run the vesselseg CLI from a checkout: ``python cli.py --help``."""

from vesselseg.cli import main

if __name__ == "__main__":
    main()
