#!/usr/bin/env python3
"""Thin entry for the streaming daemon, `p2p-daemon`.

wearable → SUB → ring buffer → quality gate → batch → model → PUB.

The daemon itself is the next step of the project (issue 3); until it lands this entry says so and exits
with status 2 rather than pretending to run.
"""

import sys

if __name__ == "__main__":
    try:
        from p2p_stream.daemon import main
    except ImportError:
        print(
            "p2p-daemon is not built yet: the streaming daemon arrives with issue 3. "
            "Offline tools available now: p2p-train, p2p-eval, and `from p2p_stream import Estimator`.",
            file=sys.stderr,
        )
        sys.exit(2)
    sys.exit(main())
