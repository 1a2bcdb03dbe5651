"""``python -m clipsearch``: the same as the ``clipsearch`` command."""
from clipsearch.main import main

main()
