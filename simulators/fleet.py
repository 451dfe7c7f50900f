#!/usr/bin/env python3
"""A synthetic wearable fleet for load and fault tests: python simulators/fleet.py --devices 1000"""

import sys

from p2p_stream.tools.bridges.fleet import main

if __name__ == "__main__":
    sys.exit(main())
