"""`python -m neuronforge.hub`: serve the loopback Hub (the same as the `neuronforge-hub` command)."""

import sys

from neuronforge.hub.daemon import main

sys.exit(main())
