"""`python -m bot` is `gitops-bot`."""

import sys

from bot.cli import main

sys.exit(main())
