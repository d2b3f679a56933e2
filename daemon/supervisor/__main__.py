"""``python -m ccmitm.supervisor``: the same as the ``ccmitmd`` command."""

from ccmitm.supervisor.daemon import main

main()
