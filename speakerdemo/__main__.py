"""``python -m speakerdemo``: the ``speakerdemo`` command (:mod:`speakerdemo.cli`)."""

import sys

from .cli import main

sys.exit(main())
