#!/usr/bin/env python3
"""Thin entry for `p2p daemon` (alias `p2p-daemon`): wearable → SUB → ring buffer → quality gate → batch → model → PUB.

python daemon.py --torch-device cuda  # same as: p2p daemon --torch-device cuda
"""

from p2p_stream.tools.cli.daemon import entry

if __name__ == "__main__":
    entry()
