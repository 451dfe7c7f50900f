#!/usr/bin/env python3
"""Write a replay CSV from a dataset (see p2p_stream/convert.py): python simulators/make_replay.py --help"""

import sys

from p2p_stream.tools.bridges.convert import main

if __name__ == "__main__":
    sys.exit(main())
