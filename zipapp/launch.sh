#!/bin/sh
# pbox: a zip archive of Python code behind this shell script.  Run it as a program, or
# as "python3 pbox.pyz".  As a program it starts python3 ($PBOX_PYTHON to choose
# another) without site (all pbox needs is in the archive) and imports pbox from the
# copy a first run unpacked to the user cache, without opening the archive at all.
exec "${PBOX_PYTHON:-python3}" -S -c 'import os, sys
e = os.environ.get
d = os.path.join(e("PBOX_CACHE_DIR") or os.path.join(
    e("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "pbox"), "pyz", "@PAYLOAD_ID@")
del sys.argv[0]
if sys.path[:1] == [""]:
    del sys.path[0]
sys.path.insert(0, d if os.path.isdir(d) else sys.argv[0])
from _pbox_launcher import main
main(sys.argv[0])' "$0" "$@"
