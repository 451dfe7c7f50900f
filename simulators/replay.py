#!/usr/bin/env python3
"""Replay a recording (the contract's replay CSV) as live wearables: python simulators/replay.py dataset.csv"""

import sys

from p2p_stream.tools.bridges.replay import main

if __name__ == "__main__":
    sys.exit(main())
