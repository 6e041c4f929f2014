"""`python -m service` runs the service (`prewarm serve`); with arguments it is the `prewarm` CLI."""

import sys

from service.cli import main

if len(sys.argv) == 1:
    sys.argv.append("serve")
main()
