"""`python -m controller` is the `ezrec` command."""

from controller.cli import main

main()
