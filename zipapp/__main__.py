"""Entry point of ``python3 pbox.pyz``: the launcher does the work (_pbox_launcher.py)."""

from _pbox_launcher import main

main()
