"""`python -m corral.cli`, the same as the `corral` script."""

from corral.cli.main import main

main()
