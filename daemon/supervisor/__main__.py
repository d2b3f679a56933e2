"""``python -m ccmitm.supervisor``: the same as the ``ccmitmd`` command."""

from ccmitm.supervisor.main import main

main()
