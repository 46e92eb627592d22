"""`python -m chatproxy.simulator`: serve the simulator (see `chatproxy.simulator.command`)."""

import sys

from chatproxy.simulator.command import main

sys.exit(main())
