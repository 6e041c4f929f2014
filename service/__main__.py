"""`python -m service` is the `prewarm` command line; without arguments it is `prewarm serve` (the embedded
demo; `python -m service serve --config FILE` runs a configured service)."""

import sys

from service.cli import main

if len(sys.argv) == 1:
    sys.argv.append("serve")
main()
