"""``python -m cluster`` is the ``headline-cluster`` command."""

from .cli import main

main(prog_name="headline-cluster")
