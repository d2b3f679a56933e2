"""``python -m ccmitm.cli``: the same as the ``ccctl`` command."""

from ccmitm.cli.entry import main

main()
