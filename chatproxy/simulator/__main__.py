"""`python -m chatproxy.simulator`: serve the simulator (see `chatproxy.simulator.server`)."""

import sys

from chatproxy.simulator.server import main

sys.exit(main())
