"""``python -m ccmitm.cli``: the same as the ``ccctl`` command."""

from ccmitm.cli.main import main

main()
